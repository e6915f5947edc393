import uvloop

from thumbnailer.app import main

uvloop.run(main())
