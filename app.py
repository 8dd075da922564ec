"""InsV2V Studio demo: `python app.py` (the bundled toy model, CPU, offline) or `python app.py --model DIR_OR_HUB_ID`;
`python app.py --study STUDY.db` serves a user study alone, for its participants.

Layout and wiring only; the tabs live in insv2v/ui/, the model work behind insv2v.editing and insv2v.sweep.
Host and port: --host/--port, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860.
"""

import argparse
import os
from pathlib import Path

from insv2v.study.store import StudyError, StudyStore
from insv2v.ui import build_demo, launch_kwargs
from insv2v.ui.serving import AppConfig, study_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # the first paragraph
    parser.add_argument("--model", help="pipeline folder or hub id (default: $INSV2V_MODEL, else assets/toy-editor)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--preload", action="store_true", help="load the model before serving, not on first use")
    parser.add_argument(
        "--study",
        metavar="STUDY.db",
        help="serve this user study alone, for participants (results behind $INSV2V_STUDY_TOKEN); "
        "without it the Rate tab shows $INSV2V_STUDY or the toy study",
    )
    args = parser.parse_args(argv)

    overrides = {"device": args.device} if args.device else {}
    if args.study:
        overrides |= {"study": Path(args.study), "study_only": True}
    config = AppConfig.from_env(args.model, **overrides)
    study = study_path(config)
    if study is not None:  # checked before serving: no participant meets a study that cannot be served
        try:
            StudyStore(study).check_served()
        except StudyError as err:
            parser.error(str(err))
    demo = build_demo(config)
    if args.preload and not config.study_only:
        from insv2v.ui.serving import get_pipeline

        get_pipeline(config)
    demo.launch(
        server_name=args.host or os.environ.get("GRADIO_SERVER_NAME"),
        server_port=args.port
        or (int(os.environ["GRADIO_SERVER_PORT"]) if os.environ.get("GRADIO_SERVER_PORT") else None),
        **launch_kwargs(config),
    )


if __name__ == "__main__":
    main()
