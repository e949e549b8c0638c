import sys

from eventsvc.cli import main

sys.exit(main())
