#!/usr/bin/env python3
"""Checks the Kubernetes examples in deploy/kubernetes/: they parse, the proxy's pods hold what
the README promises (probes on /healthz and /readyz on the admin port, non-root, read-only root
filesystem, secrets mounted where the configuration reads them, the database on a claim, the
central store configured), and the configuration each ConfigMap carries passes
`retention-proxy check-config` (run on it, with its file paths moved under a temporary
directory that holds stand-ins for the secrets).

Usage: check_kubernetes.py PATH/TO/retention-proxy [MANIFEST...]
Needs PyYAML (the client suite's virtual environment has it) and Python 3.11+ (tomllib).
"""

import ipaddress
import json
import os
import posixpath
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
PROXY = "retention-proxy"
# A client key in the shape `[reverse] clients_file` needs.
CLIENTS_TOML = (
    '[[client]]\nname = "check"\naccess_key_id = "RPCLIENTCHECK000001"\n'
    'secret_access_key = "check-secret-key-check-secret-key-0000"\n'
)
SECRET_STAND_IN = "stand-in-secret-7c1f"


class Failed(Exception):
    pass


def need(cond, what):
    if not cond:
        raise Failed(what)


def paths_in(table, prefix=""):
    """(key, value) for every string value that is an absolute path."""
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from paths_in(v, key + ".")
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    yield from paths_in(item, f"{key}[{i}].")
        elif isinstance(v, str) and v.startswith("/"):
            yield key, v


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def port_of(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise Failed(f"container {container['name']} has no port named {port!r}")


def secret_files(volume):
    """The file names a Secret volume shows (its items: the check needs them listed)."""
    items = volume["secret"].get("items")
    need(items, f"secret volume {volume['name']} lists no items")
    return {i["path"] for i in items}


def check_config(binary, text, origin):
    """check-config on `text` with every absolute path under a temporary root."""
    table = tomllib.loads(text)
    with tempfile.TemporaryDirectory() as root:
        for key, value in paths_in(table):
            moved = root + value
            text = text.replace(json.dumps(value), json.dumps(moved))
            last = key.rsplit(".", 1)[-1]
            if last.endswith("_file") or last in ("ca_cert", "ca_key", "tls_cert", "tls_key"):
                os.makedirs(os.path.dirname(moved), exist_ok=True)
                body = CLIENTS_TOML if last == "clients_file" else SECRET_STAND_IN + "\n"
                fd = os.open(moved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
                with os.fdopen(fd, "w") as f:
                    f.write(body)
        config = Path(root, "config.toml")
        config.write_text(text)
        run = subprocess.run(
            [binary, "check-config", "--config", str(config)],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ("RETENTION_PROXY_CONFIG", "PGPASSWORD")},
        )
        need(run.returncode == 0, f"{origin}: check-config exited {run.returncode}: {run.stderr.strip()}")
        need(SECRET_STAND_IN not in run.stdout + run.stderr, f"{origin}: check-config shows a secret")
    return table


def check_workload(binary, docs, w, origin):
    kind, name = w["kind"], w["metadata"]["name"]
    where = f"{origin}: {kind} {name}"
    spec = w["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext", {})
    need(pod_sc.get("runAsNonRoot") is True, f"{where}: securityContext.runAsNonRoot is not true")
    need(isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0, f"{where}: runAsUser is not a non-root uid")
    inits = spec.get("initContainers", [])
    containers = spec["containers"]
    for c in inits + containers:
        sc = c.get("securityContext", {})
        need(sc.get("readOnlyRootFilesystem") is True, f"{where}: container {c['name']} has a writable root filesystem")
        need(sc.get("allowPrivilegeEscalation") is False, f"{where}: container {c['name']} allows privilege escalation")
        need(sc.get("runAsUser", 1) != 0, f"{where}: container {c['name']} runs as root")
    proxies = [c for c in containers if c["name"] == PROXY]
    need(len(proxies) == 1, f"{where}: no container named {PROXY}")
    proxy = proxies[0]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}

    # The configuration: --config names a file in a mounted ConfigMap of this manifest.
    args = proxy.get("args", [])
    need("--config" in args, f"{where}: the proxy is not given --config")
    config_path = args[args.index("--config") + 1]
    mounts = proxy.get("volumeMounts", [])
    mount = next((m for m in mounts if posixpath.dirname(config_path) == m["mountPath"].rstrip("/")), None)
    need(mount is not None, f"{where}: nothing is mounted where {config_path} is")
    cm_name = volumes[mount["name"]].get("configMap", {}).get("name")
    need(cm_name, f"{where}: {config_path} is not from a ConfigMap")
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name]
    need(cms, f"{where}: ConfigMap {cm_name} is not in the file")
    text = cms[0]["data"].get(posixpath.basename(config_path))
    need(text, f"{where}: ConfigMap {cm_name} has no key {posixpath.basename(config_path)}")
    config = check_config(binary, text, f"{where}: ConfigMap {cm_name}")
    server, audit = config.get("server", {}), config.get("audit", {})

    # Probes: /healthz (liveness) and /readyz (readiness) on the admin listener's port.
    admin_host, _, admin_port = server.get("admin_listen", "127.0.0.1:9090").rpartition(":")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = proxy.get(probe, {}).get("httpGet")
        need(get and get.get("path") == path, f"{where}: {probe} does not ask {path}")
        need(port_of(proxy, get["port"]) == int(admin_port), f"{where}: {probe} is not on the admin port {admin_port}")
    need(not ipaddress.ip_address(admin_host.strip("[]")).is_loopback, f"{where}: the kubelet cannot reach a loopback admin listener")
    need(server.get("admin_token_file"), f"{where}: the admin listener is not loopback but has no admin_token_file")

    # Every file the configuration names is mounted, secrets from Secrets (directly or copied
    # by an init container), the database on a claim.
    def volume_at(path):
        m = max((m for m in mounts if under(path, m["mountPath"])), key=lambda m: len(m["mountPath"]), default=None)
        need(m is not None, f"{where}: nothing is mounted where {path} is")
        return m, volumes.get(m["name"])

    db_mount, db_volume = volume_at(audit.get("path", ""))
    need(
        (db_volume or {}).get("persistentVolumeClaim") or db_mount["name"] in claims,
        f"{where}: the audit database is not on a PersistentVolumeClaim",
    )
    claim = ((db_volume or {}).get("persistentVolumeClaim") or {}).get("claimName")
    need(
        claim is None or any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs),
        f"{where}: PersistentVolumeClaim {claim} is not in the file",
    )
    need(not db_mount.get("readOnly"), f"{where}: the audit database's volume is read-only")
    central = audit.get("central")
    need(central and central.get("url") and central.get("password_file"), f"{where}: [audit.central] url and password_file are not set")
    for key, path in paths_in(config):
        if key == "audit.path":
            continue
        m, v = volume_at(path)
        need(v is not None, f"{where}: {key} is on {m['name']}, which is not a volume of the pod")
        name = posixpath.basename(path)
        if "secret" in v:
            need(name in secret_files(v), f"{where}: {key} names {name}, which Secret volume {v['name']} does not hold")
        elif "emptyDir" in v:
            fillers = [c for c in inits if any(im["name"] == m["name"] for im in c.get("volumeMounts", []))]
            need(fillers, f"{where}: {key} is on emptyDir {v['name']}, which no init container fills")
            held = set()
            for c in fillers:
                for im in c.get("volumeMounts", []):
                    if "secret" in volumes.get(im["name"], {}):
                        held |= secret_files(volumes[im["name"]])
            need(name in held, f"{where}: {key} names {name}, which no Secret copied into {v['name']} holds")
        elif key not in ("audit.hmac_key_file", "audit.checkpoint_key_file", "audit.checkpoint_dir"):
            raise Failed(f"{where}: {key} ({path}) is not from a Secret")
    return proxy, config


def check_sidecar(binary, docs, origin):
    [w] = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    proxy, config = check_workload(binary, docs, w, origin)
    where = f"{origin}: {w['kind']} {w['metadata']['name']}"
    host, _, port = config["server"]["listen"].rpartition(":")
    need(ipaddress.ip_address(host.strip("[]")).is_loopback, f"{where}: the sidecar's proxy listener is not loopback")
    others = [c for c in w["spec"]["template"]["spec"]["containers"] if c["name"] != PROXY]
    need(others, f"{where}: no admin tool beside the proxy")
    urls = [e.get("value", "") for c in others for e in c.get("env", [])]
    need(
        any(u.startswith((f"http://127.0.0.1:{port}", f"http://localhost:{port}")) for u in urls),
        f"{where}: the admin tool is not pointed at the proxy on loopback port {port}",
    )
    need(config["audit"].get("proxy_instance"), f"{where}: a Deployment's pods change names: proxy_instance must be fixed")
    need(w["spec"].get("replicas", 1) == 1, f"{where}: one database, one chain: replicas must be 1")
    need(w["spec"].get("strategy", {}).get("type") == "Recreate", f"{where}: two pods at once would both write the chain")


def check_gateway(binary, docs, origin):
    [w] = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    where = f"{origin}: {w['kind']} {w['metadata']['name']}"
    need(w["kind"] == "StatefulSet", f"{where}: replicas need their own databases and stable names (a StatefulSet)")
    need(w["spec"].get("replicas", 1) >= 2, f"{where}: a gateway runs several replicas")
    need(w["spec"].get("volumeClaimTemplates"), f"{where}: no volumeClaimTemplates: replicas would share a database")
    proxy, config = check_workload(binary, docs, w, origin)
    need("proxy_instance" not in config["audit"], f"{where}: one proxy_instance for every replica")
    labels = w["spec"]["template"]["metadata"]["labels"]
    _, _, listen_port = config["server"]["listen"].rpartition(":")
    services = [
        d for d in docs
        if d["kind"] == "Service" and d["spec"].get("clusterIP") != "None"
        and all(labels.get(k) == v for k, v in d["spec"].get("selector", {}).items())
    ]
    need(services, f"{where}: no Service selects the replicas")
    need(
        any(port_of(proxy, p.get("targetPort", p["port"])) == int(listen_port) for s in services for p in s["spec"]["ports"]),
        f"{where}: no Service sends to the proxy port {listen_port}",
    )


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = argv[1]
    files = [Path(a) for a in argv[2:]] or [HERE / "kubernetes" / "sidecar.yaml", HERE / "kubernetes" / "gateway.yaml"]
    failed = False
    for f in files:
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
            need(docs, f"{f}: no documents")
            (check_gateway if f.name.startswith("gateway") else check_sidecar)(binary, docs, f.name)
            print(f"{f.name}: ok ({len(docs)} objects)")
        except (Failed, yaml.YAMLError, tomllib.TOMLDecodeError, KeyError, ValueError) as e:
            print(f"{f.name}: {type(e).__name__ if not isinstance(e, Failed) else 'FAILED'}: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
