"""A candidate in a process of its own, for tests that kill or pause a holder.

    python -m tests.holder URL ELECTION IDENTITY TTL

Campaigns until it holds the election, prints ``held <token>`` on stdout, then renews every
ttl/4 until killed; prints ``lost`` and exits 3 if a renewal reports the term over.
"""

from __future__ import annotations

import sys
import time

from leadercron.backends import from_url
from leadercron.errors import BackendUnavailable


def main() -> int:
    url, election, identity, ttl_text = sys.argv[1:5]
    ttl = float(ttl_text)
    backend = from_url(url)
    lease = None
    while lease is None:
        try:
            lease = backend.acquire(election, identity, ttl)
        except BackendUnavailable:
            lease = None
        if lease is None:
            backend.wait_for_change(election, ttl)
    print(f"held {lease.token}", flush=True)
    while True:
        time.sleep(ttl / 4)
        try:
            renewed = backend.renew(lease)
        except BackendUnavailable:
            continue
        if renewed is None:
            print("lost", flush=True)
            return 3
        lease = renewed


if __name__ == "__main__":
    sys.exit(main())
