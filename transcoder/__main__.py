import uvloop

from transcoder.app import main

uvloop.run(main())
