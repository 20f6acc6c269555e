"""Characters the RTVI API accepts in user-given names and texts (spec §2.1, §3), defined once: the
service validates with them and the client cleans with them. Regex character-class bodies, no imports,
so the `rtvi` client commands can use them without loading the service."""

# An uploaded file's name: letters, digits, `_`, `.`, `-` and space.
UPLOAD_NAME_CHARS = r"A-Za-z0-9_. \-"
# A live stream's description, username and password: letters, digits, _ . - " ' space and comma.
STREAM_TEXT_CHARS = r"A-Za-z0-9_.\-\"' ,"
