package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	v1 "k8s.io/api/core/v1"
)

// The pod's security context, as a kubelet applies it: the user and groups its containers run
// as, a read-only root filesystem, and volume ownership by fsGroup.

// identity gives exec-container's flags for container c: --user UID:GID and --groups (fsGroup
// and supplementalGroups) when the pod or the container sets runAsUser, --read-only-root when
// readOnlyRootFilesystem is set. A container that must not run as root but names no user is
// refused: the process node has no image metadata to find the image's own user in.
func (p *podRunner) identity(c v1.Container) ([]string, error) {
	psc := p.pod.Spec.SecurityContext
	if psc == nil {
		psc = &v1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &v1.SecurityContext{}
	}
	uid, gid, nonRoot := psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
	if csc.RunAsUser != nil {
		uid = csc.RunAsUser
	}
	if csc.RunAsGroup != nil {
		gid = csc.RunAsGroup
	}
	if csc.RunAsNonRoot != nil {
		nonRoot = csc.RunAsNonRoot
	}
	if nonRoot != nil && *nonRoot && (uid == nil || *uid == 0) {
		return nil, fmt.Errorf("container %s has runAsNonRoot and no non-zero runAsUser", c.Name)
	}
	var flags []string
	if uid != nil {
		g := int64(0)
		if gid != nil {
			g = *gid
		}
		groups := []string{}
		if psc.FSGroup != nil {
			groups = append(groups, strconv.FormatInt(*psc.FSGroup, 10))
		}
		for _, sg := range psc.SupplementalGroups {
			groups = append(groups, strconv.FormatInt(sg, 10))
		}
		flags = append(flags, "--user", fmt.Sprintf("%d:%d", *uid, g), "--groups", strings.Join(groups, ","))
	}
	if csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem {
		flags = append(flags, "--read-only-root")
	}
	return flags, nil
}

// setOwnership gives the pod's volumes to its fsGroup, as a kubelet's SetVolumeOwnership: group
// fsGroup, group read (and write, for writable volumes) added, directories setgid so new
// files inherit the group. With fsGroupChangePolicy OnRootMismatch a volume whose root already
// has the group and bits is left alone. Without fsGroup, a projected volume (the service
// account token) is given to runAsUser, as a kubelet does, so a non-root program can read it.
func (p *podRunner) setOwnership(sources map[string]string) error {
	psc := p.pod.Spec.SecurityContext
	if psc == nil {
		return nil
	}
	for _, vol := range p.pod.Spec.Volumes {
		root, ok := sources[vol.Name]
		if !ok || vol.HostPath != nil {
			continue
		}
		readOnly := vol.Secret != nil || vol.ConfigMap != nil || vol.Projected != nil || vol.DownwardAPI != nil
		switch {
		case psc.FSGroup != nil:
			policy := v1.FSGroupChangeAlways
			if psc.FSGroupChangePolicy != nil {
				policy = *psc.FSGroupChangePolicy
			}
			if err := groupOwn(root, int(*psc.FSGroup), readOnly, policy == v1.FSGroupChangeOnRootMismatch); err != nil {
				return fmt.Errorf("volume %s: fsGroup: %w", vol.Name, err)
			}
		case vol.Projected != nil && psc.RunAsUser != nil:
			uid := int(*psc.RunAsUser)
			err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				return os.Lchown(path, uid, -1)
			})
			if err != nil {
				return fmt.Errorf("volume %s: owner: %w", vol.Name, err)
			}
		}
	}
	return nil
}

func groupOwn(root string, gid int, readOnly, onRootMismatch bool) error {
	mask := os.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	if onRootMismatch {
		info, err := os.Stat(root)
		if err != nil {
			return err
		}
		if st, ok := statGid(info); ok && st == gid && info.Mode()&os.ModeSetgid != 0 && info.Mode().Perm()&(mask|0o110) == mask|0o110 {
			return nil
		}
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode().Perm() | mask
		if d.IsDir() {
			mode |= 0o110 | os.ModeSetgid
		}
		return os.Chmod(path, mode)
	})
}

func statGid(info fs.FileInfo) (int, bool) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid), true
	}
	return 0, false
}
