"""The exact error texts the emulator answers with, in one place.

The SDK maps server errors on these texts, so they are the contract: the documented ones are
copied from the two API documents (current flavor in English, legacy flavor translated from the
French), the others say plainly what was wrong with a malformed request. Texts with a
placeholder are `str.format` templates.
"""

from __future__ import annotations

from typing import Final


__all__ = ["ErrorText"]


class ErrorText:
    """A namespace of the plain-text error bodies, by flavor.

    Templates take `conv_id=`, `scenario_id=`, `name=` or `expected=` through `str.format`.
    """

    # --- current flavor (Bearer token) -----------------------------------------------------
    #: 400: the body has no (or an empty) `scenario_id`.
    MISSING_SCENARIO_ID: Final = "Missing required parameter: scenario_id"
    #: 400: the body has no (or an empty) `text`.
    MISSING_TEXT: Final = "Missing required parameter: text"
    #: 400: no Bearer token, or one the server does not know (and no `api_key`).
    NOT_AUTHENTICATED: Final = "Request is not authenticated"
    #: 400: the `conv_id` is unknown, or belongs to another scenario.
    CONV_ID_NOT_VALID: Final = "Conversation conv_id {conv_id} is not valid."
    #: 404: unknown scenario, or a token that is not bound to it.
    NO_SCENARIO: Final = "No implementation found for scenario_id {scenario_id}"
    #: 400: `message_context` is longer than 1000 characters.
    MESSAGE_CONTEXT_TOO_LONG: Final = "message_context is limited to 1000 characters"

    # --- legacy flavor (api_key in the body) -----------------------------------------------
    #: 400: any of `api_key`, `scenario_id`, `text` is missing or empty.
    LEGACY_MISSING_PARAMETERS: Final = "Required parameters are: api_key, scenario_id, text"
    #: 400: the `conv_id` is unknown, or belongs to another scenario.
    LEGACY_CONV_ID_NOT_FOUND: Final = "conv_id {conv_id} does not exist"
    #: 400: `message_context` is longer than 1000 characters.
    LEGACY_MESSAGE_CONTEXT_TOO_LONG: Final = "The message_context limit is 1000 characters"
    #: 401: unknown `api_key`, or one that does not belong to the scenario.
    UNAUTHORIZED: Final = "Unauthorized"

    # --- both flavors ----------------------------------------------------------------------
    #: 400: `client_metadata` has more than 5 keys.
    TOO_MANY_METADATA_KEYS: Final = "client_metadata accepts at most 5 keys"
    #: 400: the body is not JSON (or not UTF-8, or uses NaN/Infinity).
    INVALID_JSON: Final = "Request body is not valid JSON"
    #: 400: the body is JSON, but not an object.
    BODY_NOT_AN_OBJECT: Final = "Request body must be a JSON object"
    #: 400: a parameter has the wrong JSON type.
    WRONG_TYPE: Final = "Parameter {name} must be {expected}"

    # --- faults only -----------------------------------------------------------------------
    #: 500 (`error_before`, `error_after`).
    INTERNAL_SERVER_ERROR: Final = "Internal Server Error"
    #: 503 (`unavailable`).
    SERVICE_UNAVAILABLE: Final = "Service Unavailable"
    #: 429 (`rate_limit`).
    TOO_MANY_REQUESTS: Final = "Too Many Requests"
