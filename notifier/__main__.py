import uvloop

from notifier.app import main

uvloop.run(main())
