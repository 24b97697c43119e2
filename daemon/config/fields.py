"""The value rules of single settings, as annotated types, and the reload mark every field carries.

Kept apart from the `Settings` model so the model reads as the list of settings it is; each rule
here is a pure function that says what to fix when it refuses a value.
"""

import json
import os
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BeforeValidator
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode

ENV_PREFIX = "STYLEFOLD_"
CONFIG_ENV = "STYLEFOLD_CONFIG"
DEFAULT_IMAGE_EXTENSIONS: tuple[str, ...] = (
    "jpg", "jpeg", "png", "webp", "tif", "tiff", "heic", "heif", "gif",
)  # fmt: skip
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
PATH_FIELDS: tuple[str, ...] = ("inbox", "outbox", "styles", "state", "archive_dir")
WEIGHTS_PATH_FIELDS: tuple[str, ...] = ("vgg19", "vgg16", "cache_dir")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# What SIGHUP does with each setting, marked in the field itself (`json_schema_extra`) so a new
# setting cannot be added without deciding: "live" ones take effect on reload; "restart" ones are
# fixed when the component that uses them starts (folders, workers, observer, endpoint), and a
# reload keeps the running value and says so.
Reload = Literal["live", "restart"]
RELOAD_KEY = "reload"
APPLIED_LIVE: JsonDict = {RELOAD_KEY: "live"}
NEEDS_RESTART: JsonDict = {RELOAD_KEY: "restart"}


def reload_class(field: FieldInfo) -> Reload | None:
    """A field's mark ("live" or "restart"); None for an unmarked field (a test forbids those)."""
    extra = field.json_schema_extra
    mark = extra.get(RELOAD_KEY) if isinstance(extra, dict) else None
    return "live" if mark == "live" else "restart" if mark == "restart" else None


def split_list(value: object) -> object:
    """Environment variables give lists as `a,b` (or JSON); TOML and flags give real lists."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f'not a JSON list ({exc.msg}); write a,b,c or ["a","b"]') from exc
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def is_sequence(annotation: object) -> bool:
    """A list or tuple type, or one of them or None."""
    origin = get_origin(annotation)
    if origin in (list, tuple):
        return True
    return origin in (Union, UnionType) and any(map(is_sequence, get_args(annotation)))


def known_devices(value: list[str]) -> list[str]:
    devices = [device.strip().lower() for device in value]
    if not devices:
        raise ValueError("no device given; use auto, cpu, mps, cuda or cuda:N")
    for device in devices:
        if not _DEVICE.match(device):
            raise ValueError(f"unknown device {device!r}; use auto, cpu, mps, cuda or cuda:N")
    if "auto" in devices and len(devices) > 1:
        raise ValueError("'auto' cannot be combined with other devices; list them instead")
    return devices


def ray_address(value: str) -> str:
    address = value.strip()
    if address in ("local", "auto"):
        return address
    host, _, port = address.removeprefix("ray://").rpartition(":")
    # A scheme other than ray:// ("http://h:6379") passed as a host named "http://h", then
    # failed as a network error, exit 75: a restart loop over a typo (an operator's trial).
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ray_address {value!r} is not local, auto, ray://host:port or host:port")
    return address


def clean_extensions(value: list[str]) -> list[str]:
    extensions = [ext.strip().lower().lstrip(".") for ext in value]
    if not extensions:
        raise ValueError("the allow-list is empty; list extensions such as jpg,png")
    for ext in extensions:
        if not ext or not ext.isalnum():
            raise ValueError(f"{ext!r} is not a file extension; write e.g. jpg or tiff")
        if ext == "json":
            raise ValueError("json is the sidecar extension and cannot be an image extension")
    from service.imageio import readable_extensions  # Pillow, only when the list is given

    readable = readable_extensions()
    if unreadable := [ext for ext in extensions if ext not in readable]:
        raise ValueError(
            f"stylefold cannot read {', '.join(unreadable)} files; list extensions of the "
            f"formats it reads: {', '.join(sorted(readable))}"
        )
    return list(dict.fromkeys(extensions))


def name_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        if not pattern.strip() or "/" in pattern or "\0" in pattern:
            raise ValueError(
                f"{pattern!r} is not a file-name pattern; patterns match single names "
                "(e.g. *.tmp), without '/'"
            )
    return value


def host_names(value: list[str]) -> list[str]:
    names = [name.strip().lower().rstrip(".") for name in value]
    for name in names:
        if not name or not all(part.isalnum() for part in name.replace("-", "a").split(".")):
            raise ValueError(
                f"{name!r} is not a host name; give names such as photos.example.org, "
                "without a scheme, port or path"
            )
    return names


def known_level(value: str) -> str:
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown level {value!r}; use one of {', '.join(LOG_LEVELS)}")
    return level


def style_name(value: str | None) -> str | None:
    if value is not None and (not value.strip() or "/" in value or "\0" in value):
        raise ValueError(f"{value!r} is not a style name; give a name from the style library")
    return value


def absolute(value: Path) -> Path:
    return Path(os.path.abspath(value.expanduser()))


_AS_LIST = BeforeValidator(split_list)
Devices = Annotated[list[str], NoDecode, _AS_LIST, AfterValidator(known_devices)]
NamePatterns = Annotated[list[str], NoDecode, _AS_LIST, AfterValidator(name_patterns)]
Extensions = Annotated[list[str], NoDecode, _AS_LIST, AfterValidator(clean_extensions)]
HostNames = Annotated[list[str], NoDecode, _AS_LIST, AfterValidator(host_names)]
RayAddress = Annotated[str, AfterValidator(ray_address)]
LogLevel = Annotated[str, AfterValidator(known_level)]
StyleName = Annotated[str | None, AfterValidator(style_name)]
Folder = Annotated[Path, AfterValidator(absolute)]
