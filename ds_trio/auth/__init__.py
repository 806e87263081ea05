"""Bearer-token authentication: static tokens and signed JWTs, scoped over stream globs."""

from .authenticator import AuthConfigError, Authenticator, read_tokens_file
from .grants import Grant, Principal, StaticToken, hash_token, new_token
from .jwt import JwtError, JwtVerifier

__all__ = [
    "AuthConfigError",
    "Authenticator",
    "Grant",
    "JwtError",
    "JwtVerifier",
    "Principal",
    "StaticToken",
    "hash_token",
    "new_token",
    "read_tokens_file",
]
