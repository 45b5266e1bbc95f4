package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
)

// execContainer is run as `process-node exec-container [--mount SRC:DST[:ro]]... [--workdir D]
// -- ARGV...`: it gives the container its own mount namespace, bind-mounts its volumes at the
// paths the pod spec names, and execs the container's program. Processes still share the
// host's network, PIDs and filesystem otherwise (see docs/testing.md).
func execContainer(args []string) {
	runtime.LockOSThread() // namespaces are per thread until exec
	var mounts [][3]string
	workdir := ""
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
	if len(mounts) > 0 {
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
	if workdir != "" {
		if err := os.Chdir(workdir); err != nil {
			fail("workdir %s: %v", workdir, err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fail("program %s: %v", argv[0], err)
	}
	err = syscall.Exec(path, argv, os.Environ())
	fail("exec %s: %v", path, err)
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
