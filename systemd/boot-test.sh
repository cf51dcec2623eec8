#!/bin/sh
# Boots systemd in throwaway namespaces and runs the shipped unit under it, to check what
# `systemd-analyze verify` cannot: that the sandbox really lets the agent start, attach, pin,
# reload and stop, and really denies what it should. Manual check (root), not part of
# `cargo xtask test`: it needs overlayfs and a writable cgroup2 hierarchy.
#
#   sudo systemd/boot-test.sh [path/to/zone-agent]     (default: target/release/zone-agent)
#
# Nothing touches the host: the root file system is an overlay whose writes go to a tmpfs,
# /proc/sys and /sys are read-only, the network namespace is new (two veth pairs stand in
# for zone interfaces), and the only trace left outside (a cgroup2 directory) is removed.
# The "container" systemd is PID 1 of a new PID namespace, so it does not bring up the
# machine: it starts a target that pulls only zone-agent.service and a probe unit.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-$repo/target}/release/zone-agent}")
[ "$(id -u)" = 0 ] || { echo "boot-test: needs root" >&2; exit 2; }
[ -x "$bin" ] || { echo "boot-test: no agent binary at $bin (cargo xtask build)" >&2; exit 2; }
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
[ -n "$cg2" ] || { echo "boot-test: no cgroup2 hierarchy mounted" >&2; exit 2; }

work=$(mktemp -d /tmp/za-boot-test.XXXXXX)
cg="$cg2/za-boot-test-$$"
pid1=""
cleanup() {
    if [ -n "$pid1" ] && kill -0 "$pid1" 2>/dev/null; then kill -9 "$pid1" 2>/dev/null || true; fi
    sleep 1
    if [ -d "$cg" ]; then find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# --- inside the new namespaces: build the root, install, boot ---
cat > "$work/inner.sh" <<'INNER'
set -eu
work=$1 bin=$2 repo=$3
t=$work/t
mkdir -p "$t"
mount -t tmpfs -o mode=0755 tmpfs "$t"
mkdir -p "$t/upper" "$t/work" "$t/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$t/upper,workdir=$t/work" "$t/root"
r=$t/root
mount -t proc proc "$r/proc"
mount --bind "$r/proc/sys" "$r/proc/sys" && mount -o ro,remount,bind "$r/proc/sys"
mount -t sysfs -o ro sysfs "$r/sys"
mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
mount -t tmpfs -o mode=0755 tmpfs "$r/dev"
for n in null zero full random urandom tty; do touch "$r/dev/$n"; mount --bind "/dev/$n" "$r/dev/$n"; done
mkdir -p "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
touch "$r/dev/console"; mount --bind "$work/console.log" "$r/dev/console"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
ip link set lo up
ip link add zmyn type veth peer name zmynp
ip link add zlgw type veth peer name zlgwp
for i in zmyn zmynp zlgw zlgwp; do ip link set "$i" up; done

# Install exactly as an operator would (DESTDIR = the new root).
(cd "$repo" && cargo xtask install --destdir "$r" --binary "$bin") > "$work/install.log" 2>&1
cat > "$r/etc/zone-agent/policy.toml" <<'EOP'
version = 1
mode = "enforce"
[[zones]]
name = "mynumber"
interfaces = ["zmyn"]
networks = ["10.10.0.0/16"]
[[zones]]
name = "lgwan"
interfaces = ["zlgw"]
networks = ["10.20.0.0/16"]
[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
EOP
if ! "$bin" run --help 2>/dev/null | grep -q -- '--config'; then
    # An agent without `run --config` yet: the unit's command with --policy instead.
    mkdir -p "$r/etc/systemd/system/zone-agent.service.d"
    printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/zone-agent run --policy /etc/zone-agent/policy.toml\n' \
        > "$r/etc/systemd/system/zone-agent.service.d/no-config-yet.conf"
fi
# The probe: the unit's own [Unit] and sandbox lines, a script instead of the agent.
unit=$r/usr/local/lib/systemd/system/zone-agent.service
grep -v -E '^(Type|NotifyAccess|ExecStart|ExecReload|WatchdogSec|Restart|RestartSec|Description|Documentation)=' "$unit" \
    | sed '/^\[Install\]/,$d' > "$r/etc/systemd/system/za-probe.service"
grep '^ExecStartPre=' "$unit" >> "$r/etc/systemd/system/za-probe.service"
printf 'Type=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/bin/za-probe\n' >> "$r/etc/systemd/system/za-probe.service"
cat > "$r/usr/local/bin/za-probe" <<'EOP'
#!/bin/sh
ok() { echo "PROBE OK: $1"; }
bad() { echo "PROBE BAD: $1"; }
grep -q '^CapBnd:.*000000c000001000' /proc/self/status && ok "capabilities = CAP_BPF CAP_NET_ADMIN CAP_PERFMON" || bad "capabilities: $(grep CapBnd /proc/self/status)"
grep -q '^NoNewPrivs:.*1' /proc/self/status && ok "no new privileges" || bad "NoNewPrivs not set"
[ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] && ok "/sys/fs/bpf is a bpffs" || bad "/sys/fs/bpf is $(stat -f -c %T /sys/fs/bpf)"
mkdir /sys/fs/bpf/za-probe && ok "mkdir in the bpffs" || bad "mkdir in the bpffs"
bpftool map create /sys/fs/bpf/za-probe/m type array key 4 value 4 entries 1 name zaprobe && ok "bpf(): map created and pinned" || bad "bpf(): map create + pin"
bpftool map show pinned /sys/fs/bpf/za-probe/m > /dev/null && ok "pin reopened" || bad "pin reopen"
rm /sys/fs/bpf/za-probe/m && rmdir /sys/fs/bpf/za-probe && ok "unpinned" || bad "unpin"
touch /var/lib/zone-agent/probe && rm /var/lib/zone-agent/probe && ok "state dir writable" || bad "state dir not writable"
touch /etc/zone-agent/probe 2>/dev/null && bad "/etc writable" || ok "/etc read-only"
(echo 1 > /proc/sys/net/ipv4/ip_forward) 2>/dev/null && bad "/proc/sys writable" || ok "/proc/sys read-only"
touch /sys/kernel/uevent_helper 2>/dev/null && bad "/sys writable" || ok "/sys read-only"
cat /proc/kallsyms > /dev/null 2>&1 && bad "/proc/kallsyms readable" || ok "/proc/kallsyms hidden"
[ -e /sys/class/net/zmyn ] && ok "host interfaces visible" || bad "host interfaces not visible"
mount -t tmpfs tmpfs /tmp 2>/dev/null && bad "mount(2) allowed" || ok "mount(2) denied"
bpftool prog show > /dev/null 2>&1 && bad "BPF object iteration allowed (CAP_SYS_ADMIN?)" || ok "BPF object iteration denied"
EOP
chmod 0755 "$r/usr/local/bin/za-probe"
printf '[Unit]\nDescription=zone-agent boot test\nWants=zone-agent.service za-probe.service\n' \
    > "$r/etc/systemd/system/za-boot-test.target"
for u in systemd-udevd.service systemd-udev-trigger.service systemd-udevd-control.socket \
    systemd-udevd-kernel.socket systemd-modules-load.service systemd-binfmt.service \
    proc-sys-fs-binfmt_misc.automount systemd-sysctl.service sys-kernel-debug.mount \
    sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
    systemd-remount-fs.service systemd-random-seed.service systemd-timesyncd.service \
    systemd-hwdb-update.service systemd-firstboot.service getty.target \
    systemd-networkd.service systemd-resolved.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$r/etc/systemd/system/$u"
done
cd "$r"
mkdir -p oldroot
pivot_root . oldroot
umount -l /oldroot
exec env -i container=za-boot-test /lib/systemd/systemd --unit=za-boot-test.target
INNER

: > "$work/console.log"
mkdir "$cg"
# A subshell moves itself into the cgroup, so the container's cgroup root is that directory.
(echo 0 > "$cg/cgroup.procs" && exec unshare --pid --fork --mount --uts --ipc --net --cgroup \
    --propagation private -- sh "$work/inner.sh" "$work" "$bin" "$repo") > "$work/boot.log" 2>&1 &
unshare_pid=$!

in_box() { nsenter -t "$pid1" -a -r -w "$@"; }
fail() { echo "boot-test: FAIL: $*" >&2; [ -n "$pid1" ] && in_box journalctl --no-pager -n 60 >&2; exit 1; }

for _ in $(seq 1 600); do
    pid1=$(pgrep -P "$unshare_pid" 2>/dev/null | head -1 || true)
    [ -n "$pid1" ] && [ "$(cat /proc/"$pid1"/comm 2>/dev/null)" = systemd ] && \
        in_box systemctl is-active --quiet za-probe.service 2>/dev/null && break
    kill -0 "$unshare_pid" 2>/dev/null || { cat "$work/boot.log" "$work/install.log" >&2 2>/dev/null; fail "the container did not boot"; }
    sleep 0.2
done
in_box systemctl is-active --quiet za-probe.service || fail "the probe unit did not finish"

echo "--- the sandbox, as the probe unit sees it"
probe=$(in_box journalctl --no-pager -u za-probe -o cat | grep '^PROBE')
echo "$probe"
echo "$probe" | grep -q 'PROBE BAD' && fail "the sandbox is not what docs/operations.md says"

echo "--- zone-agent.service"
for _ in $(seq 1 100); do in_box systemctl is-active --quiet zone-agent && break; sleep 0.2; done
in_box systemctl is-active --quiet zone-agent || fail "zone-agent.service is not active"
echo "active: READY=1 received after attach and policy load"
for i in zmyn zlgw; do
    in_box ip link show "$i" | grep -q 'prog/xdp' || fail "no XDP program on $i"
done
echo "XDP attached to zmyn and zlgw"
in_box systemctl reload zone-agent || fail "systemctl reload"
for _ in $(seq 1 50); do
    in_box curl -s http://127.0.0.1:9750/metrics | grep -q '^zone_agent_policy_reloads_total{result="success"} [1-9]' && break
    sleep 0.2
done
in_box curl -s http://127.0.0.1:9750/metrics | grep -q '^zone_agent_policy_reloads_total{result="success"} [1-9]' \
    || fail "systemctl reload did not reload the policy"
echo "systemctl reload: policy reloaded"
in_box systemctl stop zone-agent
[ "$(in_box systemctl show -p Result --value zone-agent)" = success ] || fail "systemctl stop: $(in_box systemctl show -p Result --value zone-agent)"
echo "systemctl stop: clean exit"
echo "boot-test: PASS"
