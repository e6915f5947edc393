from shared.runtime import run_service
from transcoder.app import main

run_service(main)
