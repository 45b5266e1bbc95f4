package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// execContainer is run as `process-node exec-container [--mount SRC:DST[:ro]]... [--workdir D]
// [--netns PATH] [--user UID:GID] [--groups G,G...] [--read-only-root] -- ARGV...`: it gives
// the container its own mount namespace, bind-mounts its volumes at the paths the pod spec
// names, makes the root filesystem read-only if asked, joins the pod's network namespace,
// drops to the pod's user and groups and execs the container's program. Processes still
// share the host's PIDs and filesystem otherwise (see docs/testing.md).
func execContainer(args []string) {
	runtime.LockOSThread() // namespaces are per thread until exec
	var mounts [][3]string
	workdir, netns, user, groups := "", "", "", ""
	readOnlyRoot := false
	i := 0
	for ; i < len(args); i++ {
		switch args[i] {
		case "--mount":
			i++
			parts := strings.SplitN(args[i], ":", 3)
			if len(parts) < 2 {
				fail("bad --mount %q", args[i])
			}
			ro := ""
			if len(parts) == 3 {
				ro = parts[2]
			}
			mounts = append(mounts, [3]string{parts[0], parts[1], ro})
		case "--workdir":
			i++
			workdir = args[i]
		case "--netns":
			i++
			netns = args[i]
		case "--user":
			i++
			user = args[i]
		case "--groups":
			i++
			groups = args[i]
		case "--read-only-root":
			readOnlyRoot = true
		case "--":
			i++
			goto done
		default:
			fail("unknown option %q", args[i])
		}
	}
done:
	argv := args[i:]
	if len(argv) == 0 {
		fail("no program to run")
	}
	if len(mounts) > 0 || readOnlyRoot {
		if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
			fail("unshare mount namespace: %v (process-node must run as root)", err)
		}
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			fail("make mounts private: %v", err)
		}
		for _, m := range mounts {
			src, dst := m[0], m[1]
			info, err := os.Stat(src)
			if err != nil {
				fail("volume source %s: %v", src, err)
			}
			if info.IsDir() {
				err = os.MkdirAll(dst, 0o755)
			} else {
				_ = os.MkdirAll(dirOf(dst), 0o755)
				var f *os.File
				f, err = os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o644)
				if f != nil {
					f.Close()
				}
			}
			if err != nil {
				fail("mount point %s: %v", dst, err)
			}
			if err := syscall.Mount(src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
				fail("bind %s on %s: %v", src, dst, err)
			}
			if m[2] == "ro" {
				if err := syscall.Mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
					fail("read-only %s: %v", dst, err)
				}
			}
		}
	}
	if readOnlyRoot {
		// Every mount the container sees read-only — the root and the host's other
		// filesystems (/tmp, /run, …) — except the volumes bound above and /proc, /sys, /dev.
		var targets []string
		for _, m := range mounts {
			targets = append(targets, m[1])
		}
		if err := readOnlyExcept(targets); err != nil {
			fail("read-only root filesystem: %v", err)
		}
	}
	if netns != "" {
		if err := enterNetns(netns); err != nil {
			fail("pod network namespace %s: %v", netns, err)
		}
	}
	if workdir != "" {
		if err := os.Chdir(workdir); err != nil {
			fail("workdir %s: %v", workdir, err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fail("program %s: %v", argv[0], err)
	}
	if user == "" {
		err = syscall.Exec(path, argv, os.Environ())
		fail("exec %s: %v", path, err)
	}
	// The program is opened while still root and executed through its descriptor: the user
	// the pod runs as needs the right to execute the file, not to walk the host's directories
	// that lead to it (as with a file inside an image).
	prog, err := os.Open(path)
	if err != nil {
		fail("program %s: %v", path, err)
	}
	uid, gid, err := parseUser(user)
	if err != nil {
		fail("--user %q: %v", user, err)
	}
	var gids []int
	for _, g := range strings.Split(groups, ",") {
		if g == "" {
			continue
		}
		n, err := strconv.Atoi(g)
		if err != nil {
			fail("--groups %q: %v", groups, err)
		}
		gids = append(gids, n)
	}
	if err := syscall.Setgroups(gids); err != nil {
		fail("setgroups %v: %v", gids, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		fail("setgid %d: %v", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		fail("setuid %d: %v", uid, err)
	}
	err = execveatEmptyPath(int(prog.Fd()), argv, os.Environ())
	fail("exec %s as %s: %v", path, user, err)
}

func parseUser(s string) (int, int, error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("want UID:GID")
	}
	uid, err := strconv.Atoi(u)
	if err != nil {
		return 0, 0, err
	}
	gid, err := strconv.Atoi(g)
	if err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

// execveatEmptyPath executes the file open at fd (execveat with AT_EMPTY_PATH); it returns
// only on failure.
func execveatEmptyPath(fd int, argv, env []string) error {
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	empty, err := syscall.BytePtrFromString("")
	if err != nil {
		return err
	}
	_, _, errno := syscall.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(empty)),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return errno
}

// readOnlyExcept remounts read-only every mount point in this mount namespace except those at
// or under keep, /proc, /sys and /dev.
func readOnlyExcept(keep []string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	under := func(p, dir string) bool {
		return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		at := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(fields[4])
		skip := false
		for _, d := range append([]string{"/proc", "/sys", "/dev"}, keep...) {
			if under(at, d) {
				skip = true
				break
			}
		}
		if skip {
			continue
		}
		if err := syscall.Mount("", at, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", at, err)
		}
	}
	return nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "process-node exec-container: "+format+"\n", args...)
	os.Exit(127)
}
