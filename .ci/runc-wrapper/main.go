// capped-runc: an OCI runtime for Docker on hosts whose capability bounding set is smaller than
// what Docker asks for. It exists for CI machines whose CapBnd lacks CAP_SYS_RESOURCE: for
// --privileged, Docker asks runc for every capability it knows, runc fails to grant one outside
// its own bounding set, and kind runs every node --privileged, so no kind node could start.
//
// On `create` and `run` it rewrites the bundle's config.json, on `exec` the --process file,
// dropping only the capabilities missing from its own bounding set; then it execs the real runc
// with the same arguments. Everything else passes through unchanged.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Capability names in bit order (linux/capability.h).
var capabilityNames = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
	"SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE",
	"AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
	"BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"}

// Global runc options that take a value, so that the subcommand after them is found.
var globalWithValue = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}

func realRunc() string {
	for _, path := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"} {
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	return "runc"
}

func boundingSet() (uint64, bool) {
	status, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer status.Close()
	lines := bufio.NewScanner(status)
	for lines.Scan() {
		if value, ok := strings.CutPrefix(lines.Text(), "CapBnd:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
			return bits, err == nil
		}
	}
	return 0, false
}

func allowed(name string, bounding uint64) bool {
	for bit, known := range capabilityNames {
		if "CAP_"+known == name {
			return bounding&(1<<uint(bit)) != 0
		}
	}
	return true // one this list does not know: runc decides
}

// dropMissing removes from an OCI process object the capabilities outside the bounding set,
// and reports whether it removed any.
func dropMissing(process map[string]any, bounding uint64) bool {
	sets, ok := process["capabilities"].(map[string]any)
	if !ok {
		return false
	}
	dropped := false
	for set, value := range sets {
		list, ok := value.([]any)
		if !ok {
			continue
		}
		kept := make([]any, 0, len(list))
		for _, capability := range list {
			if name, ok := capability.(string); ok && !allowed(name, bounding) {
				dropped = true
				continue
			}
			kept = append(kept, capability)
		}
		sets[set] = kept
	}
	return dropped
}

// rewrite drops the missing capabilities from a bundle's config.json (its "process"), or from
// a process file of `runc exec`.
func rewrite(path string, isProcessFile bool, bounding uint64) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber() // uid maps and rlimits stay exact
	var document map[string]any
	if err := decoder.Decode(&document); err != nil {
		return err
	}
	process := document
	if !isProcessFile {
		if process, _ = document["process"].(map[string]any); process == nil {
			return nil
		}
	}
	if !dropMissing(process, bounding) {
		return nil
	}
	out, err := json.Marshal(document)
	if err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, info.Mode().Perm())
}

func optionValue(arguments []string, names ...string) (string, bool) {
	for i, argument := range arguments {
		for _, name := range names {
			if argument == name && i+1 < len(arguments) {
				return arguments[i+1], true
			}
			if value, ok := strings.CutPrefix(argument, name+"="); ok {
				return value, true
			}
		}
	}
	return "", false
}

func adjust(arguments []string, bounding uint64) error {
	i := 0
	for i < len(arguments) && strings.HasPrefix(arguments[i], "-") {
		if globalWithValue[arguments[i]] {
			i++
		}
		i++
	}
	if i >= len(arguments) {
		return nil
	}
	command, rest := arguments[i], arguments[i+1:]
	switch command {
	case "create", "run":
		bundle, ok := optionValue(rest, "--bundle", "-b")
		if !ok {
			bundle = "."
		}
		return rewrite(filepath.Join(bundle, "config.json"), false, bounding)
	case "exec":
		if process, ok := optionValue(rest, "--process", "-p"); ok {
			return rewrite(process, true, bounding)
		}
	}
	return nil
}

func main() {
	arguments := os.Args[1:]
	if bounding, ok := boundingSet(); ok {
		if err := adjust(arguments, bounding); err != nil {
			fmt.Fprintf(os.Stderr, "capped-runc: %v (passing the arguments through unchanged)\n", err)
		}
	}
	runc := realRunc()
	if err := syscall.Exec(runc, append([]string{runc}, arguments...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "capped-runc: exec %s: %v\n", runc, err)
		os.Exit(127)
	}
}
