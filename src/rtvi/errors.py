"""Domain errors: what went wrong, in the API's vocabulary (the spec's `code`), with no HTTP status.

Every layer raises these; the web layer maps each class to a status once (rtvi.http.errors). A class
names the kind of failure; `code` is the spec's word for it (spec §0.1), which the reference varies per
endpoint ("BadParameters", "InvalidParameter", ...), so call sites may pass their own.
"""

from __future__ import annotations


class RtviError(Exception):
    """Base of every failure the API reports to its client as {code, message}."""

    code = "InternalServerError"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidParameters(RtviError, ValueError):
    """A parameter is wrong for what it asks (overlap >= duration, unknown model, ...)."""

    code = "BadParameters"

    @classmethod
    def no_such_model(cls, requested: str, served: str) -> InvalidParameters:
        """Names what is served, so a client written for another model id knows what to send."""
        return cls(f"No such model '{requested}'; this service serves '{served}' (GET /v1/models)")


class MalformedRequest(RtviError, ValueError):
    """The request does not fit the schema (the reference's 422 InvalidParameters)."""

    code = "InvalidParameters"

    @classmethod
    def not_a_uuid(cls, value: str, field: str = "id") -> MalformedRequest:
        """Worded as the reference's schema words it."""
        return cls(f"('body', '{field}'): Input should be a valid UUID (input: \"{value[:64]}\")")


class NoSuchResource(InvalidParameters):
    """An id that names no asset or stream (the reference answers these as bad parameters)."""

    code = "BadParameter"

    def __init__(self, resource_id: object, message: str | None = None, code: str | None = None) -> None:
        super().__init__(message or f"No such resource {resource_id}", code)


class NotFound(RtviError):
    """A named thing does not exist, where the API says so plainly (CV camera removal)."""

    code = "NotFound"


class InvalidMedia(RtviError, ValueError):
    """The input is not decodable media of the expected kind (or a camera that cannot be read)."""

    code = "InvalidFile"

    def __init__(self, message: str = "File does not seem to be a valid video/image file") -> None:
        super().__init__(message)


class Conflict(RtviError):
    """The id is already taken."""

    code = "DuplicateAssetId"


class InUse(Conflict):
    """The resource is being processed and cannot be removed now."""

    code = "ResourceInUse"

    def __init__(self, resource_id: str) -> None:
        super().__init__(f"Resource {resource_id} is in use")


class TooLarge(RtviError):
    """A body, upload or payload beyond its limit."""

    code = "FileTooLarge"


class InsufficientStorage(RtviError):
    """The store is full even after the storage policy removed what it may."""

    code = "InsufficientStorage"


class Forbidden(RtviError):
    """Allowed in general but not here (a server path outside FILE_URL_ALLOWED_DIRS)."""

    code = "Forbidden"


class Unavailable(RtviError):
    """The service cannot do it right now (model loading, a dependency gone)."""

    code = "ServiceUnavailable"


class NotSupported(RtviError):
    """A valid request for something this implementation does not do (yet)."""

    code = "NotImplemented"


class InternalError(RtviError):
    """Our failure, reported with a code the spec names for it; details go to the log, not the client."""


class ModelLoadError(Exception):
    """The configured model could not be found or loaded; the message says what to fix."""
