"""Start TensorZero's embedded HTTP gateway and keep it running (bench only)."""
import signal
import sys
import time

import tensorzero.tensorzero as tz

gateway = tz._start_http_gateway(
    config_file=sys.argv[1], clickhouse_url=None, postgres_url=None, valkey_url=None, async_setup=False
)
print(gateway.base_url, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
