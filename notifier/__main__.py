from notifier.app import main
from shared.runtime import run_service

run_service(
    main,
    name="notifier",
    description=(
        "Delivers signed webhooks and emails for vidq's lifecycle events, and keeps the delivery log."
    ),
)
