from shared.runtime import run_service
from thumbnailer.app import main

run_service(
    main,
    name="thumbnailer",
    description="Makes each upload's poster JPEGs (widths 1280, 640, 320) from the vidq.uploads fanout.",
)
