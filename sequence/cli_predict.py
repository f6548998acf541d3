"""`python -m sequence predict` and `serve`: a finished run's model on new video, one source (a file,
or a live stream with --live) or many at once behind a web server. Each parses its options, calls one
library function, prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embed.cli_options import DeviceOpt, JsonOpt, key_values, with_options
from embed.console import err, fail, setup_logging
from embed.errors import ClipError, ConfigError
from sequence.cli_options import WINDOW_OPTIONS, RunOpt, RunWeightsOpt, SampleFpsOpt
from sequence.config import WindowOptions


@with_options(WindowOptions, WINDOW_OPTIONS)
def predict(
    video: Annotated[
        str,
        typer.Argument(
            help="A video file, a URL PyAV opens (rtsp://, http(s)://, udp://...), "
            "a capture device (/dev/video0 with --input-format v4l2), or - for a container stream on standard input."
        ),
    ],
    run: RunOpt,
    windows: WindowOptions,
    weights: RunWeightsOpt = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="One JSON line per window on stdout as soon as the window has its last frame; frames are "
            "skipped rather than queued when the input comes faster than the pipeline.",
        ),
    ] = False,
    sample_fps: SampleFpsOpt = None,
    input_format: Annotated[str | None, typer.Option(help="PyAV/FFmpeg input format (v4l2, mpegts, ...).")] = None,
    input_option: Annotated[
        list[str] | None,
        typer.Option(help="PyAV/FFmpeg input option KEY=VALUE (video_size=640x480, framerate=30, ...); repeatable."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the timeline [RUN/predictions/VIDEO].")] = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each state's level and probabilities for a video; a timeline (CSV, JSON, PNG) if it is long.
    With --live, one JSON line per window while the stream goes on (--smooth and --sample-fps apply)."""
    setup_logging(quiet=True)
    from sequence.cli_print import print_live, print_prediction
    from sequence.predict import PredictOptions

    try:
        options = PredictOptions(
            video,
            run,
            weights,
            device=device,
            windows=windows,
            out=out,
            input_format=input_format,
            input_options=key_values(input_option, "--input-option", "video_size=640x480"),
            sample_fps=sample_fps,
        )
        if live:
            from sequence.live import is_terminal, predict_live, status_printer

            summary = predict_live(options, status=status_printer(err) if is_terminal() else None).as_dict()
        else:
            from sequence.predict import predict_video

            result = predict_video(options)
    except (ConfigError, ClipError) as e:
        fail(str(e))
    if live:
        print_live(summary, video)
        if as_json:
            print(json.dumps({"summary": summary}))
        return
    print_prediction(result, video)
    print(json.dumps(result) if as_json else json.dumps(result["states"]))


@with_options(WindowOptions, WINDOW_OPTIONS)
def serve(
    ctx: typer.Context,
    run: RunOpt,
    windows: WindowOptions,
    host: Annotated[str, typer.Option(help="Address to listen on; any but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one, printed).")] = 8765,
    token: Annotated[str | None, typer.Option(help="Token every request must carry (16+ characters).")] = None,
    token_file: Annotated[Path | None, typer.Option(help="A file holding the token (kept out of `ps`).")] = None,
    max_sources: Annotated[int, typer.Option(help="Sources watched at once; more are refused.")] = 32,
    sample_fps: SampleFpsOpt = None,
    weights: RunWeightsOpt = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS (with --tls-key).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    allow_files: Annotated[
        Path | None,
        typer.Option(help="A folder whose videos sources may name as local files [none: network addresses and /dev only]."),
    ] = None,
    idle_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a source may send nothing before it fails, freeing its place.")
    ] = 30.0,
    db: Annotated[
        str, typer.Option(help="Where the history is kept: a SQLite file, or a URL (postgresql+psycopg://user@host/db).")
    ] = "serve.db",
    session: Annotated[
        str | None, typer.Option(help="The class session recorded into; an existing name continues it [a new one].")
    ] = None,
    retain_days: Annotated[float, typer.Option(min=0, help="Sessions older than this many days are deleted.")] = 30.0,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log one JSON object per line (for a log collector).")
    ] = False,
    device: DeviceOpt = None,
) -> None:
    """Watch many sources at once (students' cameras, streams, pushed uploads) with one model, and show
    their states live on a web page at / (a student's own page at /student). Ctrl-C stops it."""
    setup_logging(quiet=not log_json, json_lines=log_json)
    from sequence.serve.options import ServeOptions
    from sequence.serve.server import serve as run_server

    given = {k: v for k, v in ctx.params.items() if k in ServeOptions.__dataclass_fields__ and k != "windows"}
    try:
        run_server(ServeOptions(**given, windows=windows))
    except (ConfigError, ClipError) as e:
        fail(str(e))
