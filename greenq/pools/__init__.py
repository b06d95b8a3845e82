"""Pools run jobs: gevent (greenlets), prefork (child processes), solo (inline). No Redis here."""
