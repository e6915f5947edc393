from shared.runtime import run_service
from thumbnailer.app import main

run_service(main)
