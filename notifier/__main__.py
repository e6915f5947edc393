from notifier.app import main
from shared.runtime import run_service

run_service(main)
