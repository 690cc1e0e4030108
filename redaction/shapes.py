"""Shapes of secrets: the second net, for a secret no one registered.

Each pattern is narrow on purpose. The text it runs over is ordinary operator prose (job
ids such as `job-<32 hex>`, pool ids, zone names, Kubernetes messages), and a pattern that
ate every long token would make those unreadable. So a shape needs a marker that only
credentials carry: a header or field name, a scheme word, the `eyJ` that starts every
JSON Web Token, the armour of a PEM block, a `user:password@` in a URL. Values stop at a
quote, whitespace or `<`, so a JSON string, a Python repr or an XML element stays intact
around the cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MARK = "***"

_VALUE = r"[^\s\"'<>&,;}\]]+"  # a value up to the next delimiter of JSON, XML, a query, a repr

# Field names that hold a secret in a query string, a form, a header dump or a config file.
_SECRET_NAMES = (
    r"pass(?:word|wd)?|pwd|secret|client[_-]?secret|private[_-]?key"
    r"|(?:access|refresh|id|auth|api|session|bearer)[_-]?token|token"
    r"|api[_-]?key|apikey|auth-token|x-api-key"
    r"|aws[_-]secret[_-]access[_-]key|aws[_-]session[_-]token|secret[_-]?access[_-]?key"
    r"|x-amz-security-token|x-amz-signature|signature"
)
# `key=` and `sig=` only as query or form parameters: in prose ("sort key: ...") they are words.
_PARAM_ONLY = r"key|sig"


def _sub(pattern: str, replacement: str, flags: int = 0) -> Callable[[str], str]:
    compiled = re.compile(pattern, flags)
    return lambda text: compiled.sub(replacement, text)


# In order: whole blocks before the field rules could cut them in half.
SHAPES: tuple[tuple[str, Callable[[str], str]], ...] = (
    (
        "PEM block",
        _sub(
            r"-----BEGIN ([A-Z0-9 ]{1,40})-----.*?-----END \1-----",
            rf"-----BEGIN \1-----{MARK}-----END \1-----",
            re.DOTALL,
        ),
    ),
    # A private key cut short (a capped message): everything after its armour.
    ("PEM private key, cut", _sub(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*", MARK, re.DOTALL)),
    # base64 of "-----BEGIN": kubeconfig's client-certificate-data and client-key-data.
    ("base64 PEM", _sub(r"LS0tLS1CRUdJT[A-Za-z0-9+/=]*", MARK)),
    (
        "JSON Web Token",
        _sub(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", MARK),
    ),
    (
        "Authorization header",
        _sub(
            # A value holding a credential-like run, not a placeholder ("Bearer <token>").
            r"(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?=[^\"'\r\n<]*[A-Za-z0-9\-._~+/=]{8})[^\"'\r\n]+",
            rf"\1{MARK}",
            re.IGNORECASE,
        ),
    ),
    (
        "Bearer credential",
        _sub(r"\b(bearer)\s+(?!realm\b)[A-Za-z0-9\-._~+/]{8,}=*", rf"\1 {MARK}", re.IGNORECASE),
    ),
    # Basic credentials are base64 of user:password; a word after "Basic" rarely has a digit.
    ("Basic credential", _sub(r"\bBasic\s+(?=[A-Za-z]*[0-9+/=])[A-Za-z0-9+/]{6,}={0,2}", MARK)),
    (
        "XML secret element",
        _sub(
            r"(<(SecretAccessKey|SessionToken|Password|Token)>)[^<]*(</\2>)",
            rf"\1{MARK}\3",
        ),
    ),
    (
        "name=value",
        _sub(
            rf"(\b(?:{_SECRET_NAMES})[\"']?\s*=\s*[\"']?){_VALUE}",
            rf"\1{MARK}",
            re.IGNORECASE,
        ),
    ),
    ("query parameter", _sub(rf"([?&;](?:{_PARAM_ONLY})=){_VALUE}", rf"\1{MARK}", re.IGNORECASE)),
    # Headers that carry a key, as a wire dump prints them ("X-Amz-Security-Token: ...").
    (
        "secret header",
        _sub(
            r"(\b(?:x-amz-security-token|x-goog-api-key|x-api-key|x-auth-token|auth-token|"
            rf"api-key|cookie|set-cookie)\s*:\s*){_VALUE}",
            rf"\1{MARK}",
            re.IGNORECASE,
        ),
    ),
    # Only a quoted name (JSON, a Python dict): in prose "token: credentials rejected" is
    # a sentence, not a field.
    (
        '"name": value',
        _sub(
            rf"([\"'](?:{_SECRET_NAMES})[\"']\s*:\s*[\"']?)(?!{re.escape(MARK)}){_VALUE}",
            rf"\1{MARK}",
            re.IGNORECASE,
        ),
    ),
    ("URL password", _sub(r"\b([a-z][a-z0-9+.\-]*://[^\s:/@]+):[^\s@/]+@", rf"\1:{MARK}@")),
    ("AWS access key id", _sub(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", MARK)),
    # An AWS secret access key: exactly 40 base64 characters mixing cases and digits, alone.
    # Hex digests (one case) and job ids (32 hex) do not fit.
    (
        "AWS secret access key",
        _sub(
            r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
            r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
            MARK,
        ),
    ),
)


def redact_shapes(text: str) -> str:
    """`text` with every secret-shaped part replaced by `MARK`."""
    for _, rule in SHAPES:
        text = rule(text)
    return text
