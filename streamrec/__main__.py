import sys

from streamrec.app.cli import main

sys.exit(main())
