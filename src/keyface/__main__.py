import sys

from keyface.cli.main import main

sys.exit(main())
