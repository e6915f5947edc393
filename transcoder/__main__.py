from shared.runtime import run_service
from transcoder.app import main

run_service(
    main,
    name="transcoder",
    description=(
        "Encodes the renditions of the vidq.transcode.<quality> queues it serves "
        "(VIDQ_TRANSCODER_QUALITIES) with ffmpeg."
    ),
)
