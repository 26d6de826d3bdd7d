"""A remote activity worker in Python: serves the hello example's `greet`
activity to a Weft host over gRPC, exactly as the Rust worker does.

The gRPC stubs are generated at start-up from the repository's
`proto/weft/v1/*.proto` with grpcio-tools (nothing generated is committed).

    python worker.py --address 127.0.0.1:7233 [--token TOKEN | --token-file FILE]
    python worker.py --address https://weft.internal:7233 [--ca-file ca.pem] --token-file FILE

An `https://` address speaks TLS, trusting the system's root certificates or
the PEM certificates of `--ca-file` (`WEFT_CA_FILE`); `http://` or a bare
address is plaintext. The token may come from a file (`--token-file`,
`WEFT_TOKEN_FILE`, first line), which keeps it out of the process list.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))


def load_stubs():
    """Compiles the .proto files into a temporary package and imports it."""
    out = tempfile.mkdtemp(prefix="weft-stubs-")
    files = [os.path.join(PROTO_ROOT, "weft", "v1", f"{name}.proto")
             for name in ("common", "workflow", "module", "worker")]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                        f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if code != 0:
        sys.exit(f"error: cannot compile the protos under {PROTO_ROOT} (protoc exit {code})")
    sys.path.insert(0, out)
    from weft.v1 import worker_pb2, worker_pb2_grpc  # noqa: E402
    return worker_pb2, worker_pb2_grpc


def greet(name, attempt, key):
    """The activity: the same text as the Rust `greet`."""
    print(f"greet {json.dumps(name)} (attempt {attempt}, idempotency key {key})", flush=True)
    return f"Hello, {name}!"


ACTIVITIES = {"greet": greet}


class Worker:
    def __init__(self, address, token, max_concurrent, ca_file=None):
        self.pb, grpc_mod = load_stubs()
        self.channel = channel(address, ca_file)
        self.stub = grpc_mod.WorkerServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.slots = threading.Semaphore(max_concurrent)
        self.pool = ThreadPoolExecutor(max_workers=max_concurrent)
        self.stopping = threading.Event()
        self.worker_id = f"python-{os.getpid()}"

    def run(self):
        backoff = 0.1
        while not self.stopping.is_set():
            self.slots.acquire()
            if self.stopping.is_set():
                break
            try:
                answer = self.stub.PollActivityTask(
                    self.pb.PollActivityTaskRequest(
                        worker_id=self.worker_id,
                        activity_names=sorted(ACTIVITIES),
                        wait_ms=5000),
                    metadata=self.metadata, timeout=65)
                backoff = 0.1
            except grpc.RpcError as e:
                self.slots.release()
                if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                grpc.StatusCode.INVALID_ARGUMENT):
                    sys.exit(f"error: the host refused this worker: {e.details()}")
                print(f"the host is unreachable ({e.code().name}); retrying in {backoff:.1f} s",
                      file=sys.stderr, flush=True)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not answer.HasField("task"):
                self.slots.release()
                continue
            self.pool.submit(self.attempt, answer.task)
        # Graceful: attempts in flight finish before the worker exits.
        self.pool.shutdown(wait=True)

    def attempt(self, task):
        try:
            fn = ACTIVITIES[task.activity_name]
            output = fn(json.loads(task.input_json), task.attempt, task.idempotency_key)
            self.stub.CompleteActivityTask(
                self.pb.CompleteActivityTaskRequest(
                    task_token=task.task_token, output_json=json.dumps(output)),
                metadata=self.metadata)
        except grpc.RpcError as e:
            # FAILED_PRECONDITION: the attempt was superseded; nothing to do.
            print(f"reporting failed: {e.code().name}: {e.details()}", file=sys.stderr, flush=True)
        except Exception as e:  # the activity failed: the host decides on a retry
            self.stub.FailActivityTask(
                self.pb.FailActivityTaskRequest(
                    task_token=task.task_token, error_type=type(e).__name__, message=str(e)),
                metadata=self.metadata)
        finally:
            self.slots.release()


def channel(address, ca_file):
    """A channel to `address`: TLS for `https://`, plaintext otherwise."""
    if address.startswith("https://"):
        roots = None  # the system's root certificates
        if ca_file:
            try:
                with open(ca_file, "rb") as f:
                    roots = f.read()
            except OSError as e:
                sys.exit(f"error: cannot read the CA file {ca_file}: {e.strerror}; "
                         "give the PEM file of the CA that signed the host's certificate")
        return grpc.secure_channel(address.removeprefix("https://"),
                                   grpc.ssl_channel_credentials(root_certificates=roots))
    if ca_file:
        sys.exit(f"error: --ca-file is for TLS, but {address} is plaintext; "
                 "use https://HOST:PORT to reach a host that serves TLS")
    return grpc.insecure_channel(address.removeprefix("http://"))


def read_token(args):
    """The token from --token, or the first line of --token-file."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                return f.readline().strip() or None
        except OSError as e:
            sys.exit(f"error: cannot read the token file {args.token_file}: {e.strerror}")
    return args.token


def main():
    parser = argparse.ArgumentParser(description="Serves `greet` to a Weft host")
    default = os.environ.get("WEFT_ADDRESS", "http://127.0.0.1:7233")
    parser.add_argument("--address", default=default)
    parser.add_argument("--token", default=os.environ.get("WEFT_TOKEN"))
    parser.add_argument("--token-file", default=os.environ.get("WEFT_TOKEN_FILE"))
    parser.add_argument("--ca-file", default=os.environ.get("WEFT_CA_FILE"))
    parser.add_argument("--max-concurrent", type=int, default=8)
    args = parser.parse_args()
    address = args.address
    worker = Worker(address, read_token(args), args.max_concurrent, args.ca_file)

    def stop(*_):
        worker.stopping.set()
        worker.slots.release()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"serving greet to {address}; Ctrl-C stops", flush=True)
    worker.run()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
