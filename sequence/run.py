"""One finished run folder, opened once: its config, the stores it was trained on, its metrics and,
when asked, its model. Predict, live and evaluate work from a Run, as a checkpoint carries its config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from embed.devices import resolve_device
from embed.errors import ConfigError
from embed.identity import WeightsIdentity
from embed.stores import split_per_store
from sequence.config import WindowOptions
from sequence.runs import load_model, load_run

if TYPE_CHECKING:
    from embed.engine import StreamEngine
    from embed.model_stage import ModelStage
    from embed.streaming import EmbeddedChunk, Reading
    from sequence.windows import WindowScorer


@dataclass
class Run:
    path: Path
    config: dict
    store: dict
    metrics: dict
    data: dict
    _models: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: Path | str) -> Run:
        """A finished run (a ConfigError for a killed, running or missing one)."""
        r = load_run(Path(path))
        return cls(r["path"], r["config"], r["store"], r["metrics"], r["data"])

    @property
    def states(self) -> list[str]:
        return self.config["states"]

    def model(self, device: str | None = "auto"):
        """The trained head on a device, loaded from model.pt once per device."""
        dev = resolve_device(device)
        if str(dev) not in self._models:
            self._models[str(dev)] = load_model(self.path, dev)
        return self._models[str(dev)]

    def scorer(self, device: str | None = "auto", stage: ModelStage | None = None) -> WindowScorer:
        """The model scoring windows; with a model stage (an engine's), windows from many sources
        are scored in one call."""
        from sequence.windows import WindowScorer

        return WindowScorer(self.model(device), self.config, resolve_device(device), stage=stage)

    def stream_inputs(self, weights: str | None = None) -> tuple[list[dict], list[str]]:
        """The extraction configs this run's input is computed with from a video, and each backbone's
        --weights (comma-separated in `weights` for a fused run, as on `sequence train`). Features
        imported from another tool cannot be computed here: a ConfigError says which."""
        configs = [p["config"] for p in self.store["parts"]] if "parts" in self.store else [self.store["config"]]
        for c in configs:
            if c.get("importer"):
                raise ConfigError(
                    f"{self.path}: its input '{c['backbone']}' was imported from {c['importer']} "
                    f"files, which affectseq cannot compute from a video; fix: extract them for this "
                    f"video with the same tool and import them, or predict with a run trained on "
                    f"`embed run` stores only"
                )
        given = split_per_store(weights, len(configs), "weights")
        recorded = split_per_store(self.config.get("weights"), len(configs), "weights")
        return configs, [
            g or WeightsIdentity.parse(c["weights"]).weights_arg(r) for c, r, g in zip(configs, recorded, given, strict=True)
        ]

    def source_rate_cap(
        self, source: object, input_format: str | None = None, sample_fps: float | None = None
    ) -> float | None:
        """A source's frame-rate cap: a file at every frame the cache's policy keeps, a stream thinned
        to the run's rate, or to `sample_fps` where that is lower."""
        from embed.video import is_file_source

        is_file = not hasattr(source, "read") and is_file_source(str(source), input_format)
        return min((f for f in (None if is_file else self.rate_cap(), sample_fps) if f), default=None)

    def pacing(self, sample_fps: float | None) -> tuple[int, int] | None:
        """The tracker's detection interval and the chunk size for a live source thinned to
        `sample_fps` (embed.streaming.live_pacing: both last as long in seconds as at the run's frame
        rate); None at the run's own rate."""
        from embed.streaming import live_pacing

        config = self.store["parts"][0]["config"] if "parts" in self.store else self.store["config"]
        every = (config.get("detector") or {}).get("detect_every", 1)
        return live_pacing(every, self.config.get("frame_rate"), sample_fps)

    def engine(self, weights: str | None = None, device: str | None = "auto", live: bool = True) -> StreamEngine:
        """Stage one's engine set up for this run's input (networks loaded once, one model stage), to
        which sources are added, each embedded exactly as this run's cache was. Its owner closes it."""
        from embed.engine import open_engine
        from embed.streaming import spec_for_stores

        configs, w = self.stream_inputs(weights)
        spec = spec_for_stores(configs, w, device=device, label=self.path.name)
        return open_engine(spec, label=self.path.name, match=configs, live=live)

    def reading(
        self,
        source: object,
        *,
        input_format: str | None = None,
        input_options: dict[str, str] | None = None,
        sample_fps: float | None = None,
        live: bool = False,
        idle_timeout: float | None = None,
    ) -> Reading:
        """How stage one reads a source for this run: a file at every frame the cache's policy keeps,
        a stream thinned to the run's rate (or `sample_fps`), a live one paced for it (pacing); a
        network address that sends nothing for `idle_timeout` seconds fails."""
        from embed.streaming import Reading

        return Reading(
            input_format=input_format,
            input_options=input_options,
            live=live,
            rate_cap=self.source_rate_cap(source, input_format, sample_fps),
            pacing=self.pacing(sample_fps) if live else None,
            idle_timeout=idle_timeout,
        )

    def rate_cap(self) -> float | None:
        """At most this many frames per second reach the model: the rate its cache holds (10 % slack
        for jitter), so a faster camera is thinned to what the model was trained on."""
        rate = self.config.get("frame_rate")
        return rate * 1.1 if rate else None

    def stream(
        self,
        source: str | Path,
        *,
        weights: str | None = None,
        device: str | None = "auto",
        reading: Reading | None = None,
        ready: Callable[[], None] | None = None,
    ) -> Iterator[EmbeddedChunk]:
        """A video or live source embedded through stage one exactly as this run's cache was (read as
        `reading` says: Run.reading)."""
        from embed.streaming import spec_for_stores, stream_video  # the stage-one entry stage two uses
        from embed.video import is_file_source

        reading = reading or self.reading(source)
        configs, w = self.stream_inputs(weights)
        if is_file_source(source, reading.input_format) and not Path(source).is_file():
            raise ConfigError(f"{source}: no such video; fix: pass the path of a video file")
        spec = spec_for_stores(configs, w, device=device, label=self.path.name)
        return stream_video(source, spec, reading, match=configs, ready=ready)

    def predict(
        self,
        video: str | Path,
        *,
        windows: WindowOptions | None = None,
        device: str | None = "auto",
        weights: str | None = None,
        out: Path | None = None,
    ) -> dict:
        """What `sequence predict VIDEO --json` prints: each state's level and probabilities (the mean
        over the video's windows) and, for a video longer than one window, its timeline's files
        (timeline.json: one dict per window)."""
        from sequence.predict import PredictOptions, predict_video

        options = PredictOptions(str(video), self.path, weights, device=device, windows=windows or WindowOptions(), out=out)
        return predict_video(options, run=self)

    def predict_folder(self, folder: str | Path, *, pattern: str = "*", **kwargs) -> dict[str, dict]:
        """Run.predict for each video of a folder (by name, VIDEO_SUFFIXES, `pattern` to narrow),
        each timeline in RUN/predictions/<video name>."""
        from embed.layouts import VIDEO_SUFFIXES

        videos = sorted(p for p in Path(folder).rglob(pattern) if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise ConfigError(f"{folder}: no video files (*{', *'.join(VIDEO_SUFFIXES)}); fix: pass a folder of videos")
        return {str(v): self.predict(v, **kwargs) for v in videos}

    def source_name(self, source: str | Path, input_format: str | None = None) -> str | None:
        """A file source's name; None for a stream, a device or a pipe."""
        from embed.video import is_file_source

        return Path(str(source)).name if is_file_source(source, input_format) else None
