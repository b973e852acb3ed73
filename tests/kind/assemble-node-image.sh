#!/usr/bin/env bash
# Assemble a kind node image the way kind's `build node-image` does, without a registry: run a
# build container from the Debian base, copy kind's images/base files and the binaries in,
# import the control plane's images into containerd's k8s.io namespace, commit.
# Driven by tests/kind/nodeimage.py, which builds what it names:
#   assemble-node-image.sh IMAGE
#   OWN_BIN          kind, containerd, runc, crictl, cni/, coredns, pause, kube-router,
#                    local-path-provisioner
#   KUBERNETES_BIN   kubeadm, kubelet, kubectl, kube-proxy, the control plane, etcd
#   NODE_BASE        the debootstrap image; KIND_FILES kind's images/base/files
#   KUBERNETES_VERSION
#   KUBE_ROUTER_IMAGE, LOCAL_PATH_IMAGE  names for the add-on images built here
#   BUSYBOX_IMAGE    a host image, preloaded as local-path's helper (and for test pods)
#   MANIFESTS        default-cni.yaml and default-storage.yaml, with image placeholders
set -euo pipefail
image=$1
work=$(mktemp -d)
build_container=airflow-ha-kind-node-build-$$
# Component images are tagged under this prefix on the host, so that none replaces an image
# someone else tagged registry.k8s.io/...; inside the node they get kubeadm's names.
part_prefix=airflow-ha-kind-node-part
parts=()
cleanup() {
    docker rm -f -v "$build_container" >/dev/null 2>&1 || true
    ((${#parts[@]})) && docker rmi "${parts[@]}" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS
step() { echo "  [$((SECONDS - started)) s] $*" >&2; }

# kubeadm says which images it will run; those are the names the node must hold.
mapfile -t wanted < <("$KUBERNETES_BIN/kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION")
image_named() { printf '%s\n' "${wanted[@]}" | grep "/$1:"; }
part_of() { echo "$part_prefix/${1#*/}"; }

# An image of one binary and a passwd: docker import of a small tree.
binary_image() { # name entrypoint source destination [image]
    local tree=$work/$1 part=${5:-}
    [ -n "$part" ] || part=$(part_of "$(image_named "$1")")
    mkdir -p "$tree/etc" "$tree/tmp" "$(dirname "$tree/$4")"
    chmod 1777 "$tree/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$tree/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$tree/etc/group"
    cp "$3" "$tree/$4"
    tar -C "$tree" --owner=0 --group=0 -c . |
        docker import --change "ENTRYPOINT [\"$2\"]" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$part" >/dev/null
    parts+=("$part")
}
for name in kube-apiserver kube-controller-manager kube-scheduler etcd; do
    binary_image "$name" "/usr/local/bin/$name" "$KUBERNETES_BIN/$name" "usr/local/bin/$name"
done
binary_image coredns /coredns "$OWN_BIN/coredns" coredns
binary_image pause /pause "$OWN_BIN/pause" pause
binary_image local-path-provisioner /usr/local/bin/local-path-provisioner "$OWN_BIN/local-path-provisioner" \
    usr/local/bin/local-path-provisioner "$LOCAL_PATH_IMAGE"
# kube-proxy and kube-router run iptables, ipset and conntrack: they get the Debian base (a
# local FROM needs no registry), and share its layer in the node.
debian_image() { # image binary
    local name
    name=$(basename "$2")
    mkdir -p "$work/$name"
    cp "$2" "$work/$name/"
    printf 'FROM %s\nCOPY %s /usr/local/bin/%s\nENTRYPOINT ["/usr/local/bin/%s"]\n' "$NODE_BASE" "$name" "$name" "$name" >"$work/$name/Dockerfile"
    docker build -q -t "$1" "$work/$name" >/dev/null
    parts+=("$1")
}
debian_image "$(part_of "$(image_named kube-proxy)")" "$KUBERNETES_BIN/kube-proxy"
debian_image "$KUBE_ROUTER_IMAGE" "$OWN_BIN/kube-router"
# Not a part: the busybox image is the caller's, and stays on the host.
docker save "${parts[@]}" "$BUSYBOX_IMAGE" -o "$work/images.tar"
ours=("$KUBE_ROUTER_IMAGE" "$LOCAL_PATH_IMAGE" "$BUSYBOX_IMAGE")
step "component images: ${wanted[*]} ${ours[*]}"

docker run -d --name "$build_container" --entrypoint=sleep --security-opt seccomp=unconfined "$NODE_BASE" infinity >/dev/null
in_node() { docker exec -i "$build_container" "$@"; }

# kind's images/base files, with the modes and systemd set-up of its Dockerfile.
docker cp "$KIND_FILES/." "$build_container:/"
in_node bash -euc '
chmod 0755 /usr/local/bin/* /kind /kind/bin /kind/bin/*
find /etc/containerd /etc/default /etc/sysctl.d /etc/systemd/system /kind -type f ! -path "/kind/bin/*" -exec chmod 0644 {} +
chmod 0644 /etc/crictl.yaml
find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
echo ReadKMsg=no >> /etc/systemd/journald.conf
ln -sf /usr/lib/systemd/systemd /sbin/init
systemctl enable kubelet.service containerd.service undo-mount-hacks.service
systemctl mask systemd-binfmt.service
mkdir -p /etc/kubernetes/manifests /opt/cni/bin /usr/local/sbin /etc/cni/net.d /kind/manifests
'
for name in containerd ctr containerd-shim-runc-v2 crictl; do docker cp "$OWN_BIN/$name" "$build_container:/usr/local/bin/"; done
docker cp "$OWN_BIN/runc" "$build_container:/usr/local/sbin/runc"
for name in kubeadm kubelet kubectl; do docker cp "$KUBERNETES_BIN/$name" "$build_container:/usr/bin/"; done
docker cp "$OWN_BIN/cni/." "$build_container:/opt/cni/bin/"
in_node bash -euc 'chown root:root /usr/local/bin/* /usr/local/sbin/runc /usr/bin/kube* /opt/cni/bin/*
chmod 0755 /usr/local/bin/* /usr/local/sbin/runc /usr/bin/kube* /opt/cni/bin/*'
step "kind's base files and the binaries in"

pause_image=$(image_named pause)
in_node bash -euc "
ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}' |
    jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
sed -i 's#sandbox_image = .*#sandbox_image = \"$pause_image\"#' /etc/containerd/config.toml
# Hosts whose bounding set lacks CAP_SYS_RESOURCE give the node none either, so runc cannot lower
# oom_score_adj below containerd's own (the CRI asks -998 for sandboxes) and every pod sandbox
# fails. restrict_oom_score_adj clamps what the CRI asks to containerd's own score.
sed -i 's#restrict_oom_score_adj = false#restrict_oom_score_adj = true#' /etc/containerd/config.toml
grep -q 'restrict_oom_score_adj = true' /etc/containerd/config.toml
echo -n $KUBERNETES_VERSION > /kind/version"
# kind applies these at cluster creation: kube-router as the CNI (unless the cluster disables
# the default CNI) and local-path-provisioner as the default StorageClass. /etc/cni/net.d stays
# empty until kube-router's init container writes its conflist, so nodes are NotReady till then.
sed "s#KUBE_ROUTER_IMAGE#$KUBE_ROUTER_IMAGE#g" "$MANIFESTS/default-cni.yaml" |
    in_node tee /kind/manifests/default-cni.yaml >/dev/null
sed -e "s#LOCAL_PATH_PROVISIONER_IMAGE#$LOCAL_PATH_IMAGE#g" -e "s#LOCAL_PATH_HELPER_IMAGE#$BUSYBOX_IMAGE#g" \
    "$MANIFESTS/default-storage.yaml" | in_node tee /kind/manifests/default-storage.yaml >/dev/null
in_node bash -euc '! grep -q _IMAGE /kind/manifests/*.yaml'
in_node bash -euc 'containerd --version; runc --version | head -1; crictl --version; kubelet --version' >&2
step "containerd and CNI configured"

# Into containerd's k8s.io namespace as kind's importer does, then under kubeadm's names, pinned
# so that the kubelet's image garbage collection leaves them. ctr warns about cgroup v1 on
# every call on these hosts; that line says nothing about the image.
images() { in_node ctr --namespace=k8s.io images "$@" 2> >(grep -v 'support for cgroup v1 is deprecated' >&2); }
in_node bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
in_node bash -euc 'for _ in {1..20}; do [ -S /run/containerd/containerd.sock ] && exit 0; sleep 0.5; done; echo "containerd did not start" >&2; exit 1'
images import --all-platforms --no-unpack --digests - <"$work/images.tar" >/dev/null
for name in "${wanted[@]}"; do
    images tag "docker.io/$(part_of "$name")" "$name" >/dev/null
    images rm "docker.io/$(part_of "$name")" >/dev/null
    images label "$name" io.cri-containerd.pinned=pinned >/dev/null
done
# docker save names them as Docker does; containerd's names are the normalized ones the
# kubelet asks for (docker.io/library/ for a bare name).
for name in "${ours[@]}"; do
    case $name in
    */*) name=docker.io/$name ;;
    *) name=docker.io/library/$name ;;
    esac
    images label "$name" io.cri-containerd.pinned=pinned >/dev/null
done
images list -q | grep -v '^sha256:' >&2
in_node pkill containerd
sleep 1
in_node rm -rf /tmp/containerd.log /run/containerd
step "images imported into containerd"

docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'ENV container=docker' \
    "$build_container" "$image-commit" >/dev/null
# Docker 20.10's `commit --change` refuses STOPSIGNAL; a one-line build (local FROM) sets it.
printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$image-commit" | docker build -q -t "$image" - >/dev/null
docker rmi "$image-commit" >/dev/null
step "committed $image"
