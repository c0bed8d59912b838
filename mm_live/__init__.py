"""mm-live: end-to-end multimodal ranking for live streaming.

Import the pieces you need from their modules (``mm_live.media``, ``mm_live.config``, ...);
this package root stays import-light so ``mm-live --help`` answers without loading torch.
"""

__version__ = "0.1.0"

from mm_live.errors import MMLiveError  # noqa: F401  (the one exception users catch)
