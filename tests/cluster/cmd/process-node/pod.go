package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const restartBackoffMax = 10 * time.Second

// podRunner owns one pod: its volumes, its containers' processes and its status.
type podRunner struct {
	node *Node
	uid  string
	dir  string

	mu         sync.Mutex
	pod        *v1.Pod
	ip         string
	started    metav1.Time
	containers []*containerRunner
	initDone   bool
	terminated bool
	stop       chan struct{}
	dirty      chan struct{}
}

type containerRunner struct {
	pod  *podRunner
	spec v1.Container
	init bool

	mu       sync.Mutex
	cmd      *exec.Cmd
	restarts int32
	state    v1.ContainerState
	last     v1.ContainerState
	ready    bool
	exited   chan struct{}
}

func newPodRunner(n *Node, pod *v1.Pod) *podRunner {
	return &podRunner{
		node: n, uid: string(pod.UID), pod: pod.DeepCopy(),
		dir:   filepath.Join(n.stateDir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)),
		stop:  make(chan struct{}),
		dirty: make(chan struct{}, 1),
	}
}

func (p *podRunner) logf(format string, args ...interface{}) {
	log.Printf("%s/%s: %s", p.pod.Namespace, p.pod.Name, fmt.Sprintf(format, args...))
}

func (p *podRunner) markDirty() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

func (p *podRunner) update(pod *v1.Pod) {
	p.mu.Lock()
	p.pod = pod.DeepCopy()
	deleting := pod.DeletionTimestamp != nil && !p.terminated
	p.mu.Unlock()
	if deleting {
		grace := 30 * time.Second
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		go func() {
			p.terminate(grace)
			p.node.finalDelete(context.Background(), pod)
		}()
	}
}

func (p *podRunner) run(ctx context.Context) {
	ip, err := p.node.allocateIP()
	if err != nil {
		p.logf("no pod address: %v", err)
		return
	}
	p.ip = ip
	p.started = metav1.Now()
	if p.pod.Spec.HostNetwork {
		err = addAddress(ip)
	} else {
		err = setupPodNetwork(ip)
	}
	if err != nil {
		p.logf("%v", err)
		return
	}
	// Killed meanwhile (kill() freed the address before the network existed): undo it.
	p.mu.Lock()
	gone := p.terminated
	p.mu.Unlock()
	if gone {
		teardownPodNetwork(ip)
		delAddress(ip)
		return
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		p.logf("state dir: %v", err)
		return
	}
	go p.statusLoop(ctx)
	p.markDirty()
	mounts, err := p.prepareVolumes(ctx)
	for err != nil {
		p.logf("volumes not ready: %v", err)
		select {
		case <-p.stop:
			return
		case <-time.After(2 * time.Second):
		}
		mounts, err = p.prepareVolumes(ctx)
	}
	for _, spec := range p.pod.Spec.InitContainers {
		c := &containerRunner{pod: p, spec: spec, init: true, exited: make(chan struct{})}
		p.mu.Lock()
		p.containers = append(p.containers, c)
		p.mu.Unlock()
		if !c.runToCompletion(ctx, mounts[spec.Name]) {
			return
		}
	}
	p.mu.Lock()
	p.initDone = true
	p.mu.Unlock()
	for _, spec := range p.pod.Spec.Containers {
		c := &containerRunner{pod: p, spec: spec, exited: make(chan struct{})}
		p.mu.Lock()
		p.containers = append(p.containers, c)
		p.mu.Unlock()
		go c.supervise(ctx, mounts[spec.Name])
		go c.probe(ctx)
	}
	p.markDirty()
}

// terminate stops every container: SIGTERM to each process group, SIGKILL after the grace
// period.
func (p *podRunner) terminate(grace time.Duration) {
	p.mu.Lock()
	if p.terminated {
		p.mu.Unlock()
		return
	}
	p.terminated = true
	close(p.stop)
	containers := append([]*containerRunner(nil), p.containers...)
	p.mu.Unlock()
	for _, c := range containers {
		c.signal(syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, c := range containers {
		select {
		case <-c.exited:
		case <-deadline:
			for _, c := range containers {
				c.signal(syscall.SIGKILL)
			}
			for _, c := range containers {
				<-c.exited
			}
		}
	}
	p.logf("terminated")
}

// kill is used when the pod object is gone: no grace.
func (p *podRunner) kill() {
	p.terminate(0)
	p.node.remove(p.uid, p.ip)
}

func (n *Node) finalDelete(ctx context.Context, pod *v1.Pod) {
	err := n.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Printf("%s/%s: final delete: %v", pod.Namespace, pod.Name, err)
	}
}

// ---- volumes ----

// mount is one bind mount into a container's mount namespace.
type mount struct {
	source, target string
	readOnly       bool
}

func (p *podRunner) prepareVolumes(ctx context.Context) (map[string][]mount, error) {
	sources := map[string]string{}
	for _, vol := range p.pod.Spec.Volumes {
		dir := filepath.Join(p.dir, "volumes", vol.Name)
		switch {
		case vol.PersistentVolumeClaim != nil:
			path, err := p.claimPath(ctx, vol.PersistentVolumeClaim.ClaimName)
			if err != nil {
				return nil, err
			}
			sources[vol.Name] = path
		case vol.HostPath != nil:
			sources[vol.Name] = vol.HostPath.Path
		case vol.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, err
			}
			sources[vol.Name] = dir
		case vol.Secret != nil:
			secret, err := p.node.client.CoreV1().Secrets(p.pod.Namespace).Get(ctx, vol.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("secret %s: %w", vol.Secret.SecretName, err)
			}
			if err := writeFiles(dir, secret.Data, vol.Secret.Items, vol.Secret.DefaultMode); err != nil {
				return nil, err
			}
			sources[vol.Name] = dir
		case vol.ConfigMap != nil:
			cm, err := p.node.client.CoreV1().ConfigMaps(p.pod.Namespace).Get(ctx, vol.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("configmap %s: %w", vol.ConfigMap.Name, err)
			}
			data := map[string][]byte{}
			for k, v := range cm.Data {
				data[k] = []byte(v)
			}
			if err := writeFiles(dir, data, vol.ConfigMap.Items, vol.ConfigMap.DefaultMode); err != nil {
				return nil, err
			}
			sources[vol.Name] = dir
		case vol.Projected != nil:
			if err := p.projected(ctx, dir, vol.Projected); err != nil {
				return nil, err
			}
			sources[vol.Name] = dir
		case vol.DownwardAPI != nil:
			data := map[string][]byte{}
			for _, item := range vol.DownwardAPI.Items {
				if item.FieldRef != nil {
					data[item.Path] = []byte(p.fieldValue(item.FieldRef.FieldPath))
				}
			}
			if err := writeFiles(dir, data, nil, vol.DownwardAPI.DefaultMode); err != nil {
				return nil, err
			}
			sources[vol.Name] = dir
		default:
			return nil, fmt.Errorf("volume %s: unsupported volume type", vol.Name)
		}
	}
	if err := p.setOwnership(sources); err != nil {
		return nil, err
	}
	out := map[string][]mount{}
	all := append(append([]v1.Container{}, p.pod.Spec.InitContainers...), p.pod.Spec.Containers...)
	for _, c := range all {
		for _, vm := range c.VolumeMounts {
			src, ok := sources[vm.Name]
			if !ok {
				return nil, fmt.Errorf("container %s mounts unknown volume %s", c.Name, vm.Name)
			}
			if vm.SubPath != "" {
				src = filepath.Join(src, vm.SubPath)
			}
			out[c.Name] = append(out[c.Name], mount{source: src, target: vm.MountPath, readOnly: vm.ReadOnly})
		}
	}
	return out, nil
}

func (p *podRunner) claimPath(ctx context.Context, claim string) (string, error) {
	pvc, err := p.node.client.CoreV1().PersistentVolumeClaims(p.pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("claim %s: %w", claim, err)
	}
	if pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("claim %s is not bound yet", claim)
	}
	pv, err := p.node.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("volume %s: %w", pvc.Spec.VolumeName, err)
	}
	if pv.Spec.HostPath == nil {
		return "", fmt.Errorf("volume %s is not a directory volume", pv.Name)
	}
	if err := os.MkdirAll(pv.Spec.HostPath.Path, 0o755); err != nil {
		return "", err
	}
	return pv.Spec.HostPath.Path, nil
}

func (p *podRunner) projected(ctx context.Context, dir string, proj *v1.ProjectedVolumeSource) error {
	data := map[string][]byte{}
	for _, src := range proj.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			expiry := int64(3600)
			if src.ServiceAccountToken.ExpirationSeconds != nil {
				expiry = *src.ServiceAccountToken.ExpirationSeconds
			}
			req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
				ExpirationSeconds: &expiry,
				BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.pod.Name, UID: p.pod.UID},
			}}
			if src.ServiceAccountToken.Audience != "" {
				req.Spec.Audiences = []string{src.ServiceAccountToken.Audience}
			}
			sa := p.pod.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			tok, err := p.node.client.CoreV1().ServiceAccounts(p.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("service account token: %w", err)
			}
			data[src.ServiceAccountToken.Path] = []byte(tok.Status.Token)
		case src.ConfigMap != nil:
			cm, err := p.node.client.CoreV1().ConfigMaps(p.pod.Namespace).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("configmap %s: %w", src.ConfigMap.Name, err)
			}
			for _, item := range src.ConfigMap.Items {
				data[item.Path] = []byte(cm.Data[item.Key])
			}
			if len(src.ConfigMap.Items) == 0 {
				for k, v := range cm.Data {
					data[k] = []byte(v)
				}
			}
		case src.Secret != nil:
			s, err := p.node.client.CoreV1().Secrets(p.pod.Namespace).Get(ctx, src.Secret.Name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("secret %s: %w", src.Secret.Name, err)
			}
			for _, item := range src.Secret.Items {
				data[item.Path] = s.Data[item.Key]
			}
			if len(src.Secret.Items) == 0 {
				for k, v := range s.Data {
					data[k] = v
				}
			}
		case src.DownwardAPI != nil:
			for _, item := range src.DownwardAPI.Items {
				if item.FieldRef != nil {
					data[item.Path] = []byte(p.fieldValue(item.FieldRef.FieldPath))
				}
			}
		}
	}
	return writeFiles(dir, data, nil, proj.DefaultMode)
}

// writeFiles writes a secret's, config map's or downward API's files, with the volume's
// defaultMode (0644 when unset, as a kubelet).
func writeFiles(dir string, data map[string][]byte, items []v1.KeyToPath, defaultMode *int32) error {
	mode := os.FileMode(0o644)
	if defaultMode != nil {
		mode = os.FileMode(*defaultMode) & os.ModePerm
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(path string, value []byte) error {
		full := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, value, mode); err != nil {
			return err
		}
		return os.Chmod(full, mode)
	}
	if len(items) > 0 {
		for _, item := range items {
			if err := write(item.Path, data[item.Key]); err != nil {
				return err
			}
		}
		return nil
	}
	for k, v := range data {
		if err := write(k, v); err != nil {
			return err
		}
	}
	return nil
}

// ---- environment ----

func (p *podRunner) fieldValue(path string) string {
	pod := p.pod
	switch path {
	case "metadata.name":
		return pod.Name
	case "metadata.namespace":
		return pod.Namespace
	case "metadata.uid":
		return string(pod.UID)
	case "spec.nodeName":
		return pod.Spec.NodeName
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName
	case "status.podIP":
		return p.ip
	case "status.hostIP":
		return "127.0.0.1"
	}
	for _, prefix := range []string{"metadata.labels['", "metadata.annotations['"} {
		if strings.HasPrefix(path, prefix) && strings.HasSuffix(path, "']") {
			key := strings.TrimSuffix(strings.TrimPrefix(path, prefix), "']")
			if strings.HasPrefix(prefix, "metadata.labels") {
				return pod.Labels[key]
			}
			return pod.Annotations[key]
		}
	}
	return ""
}

func (p *podRunner) environment(ctx context.Context, c v1.Container) ([]string, error) {
	env := map[string]string{
		"PATH":                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME":                p.pod.Name,
		"KUBERNETES_SERVICE_HOST": p.node.apiHost,
		"KUBERNETES_SERVICE_PORT": p.node.apiPort,
		"KUBERNETES_PORT":         "tcp://" + net.JoinHostPort(p.node.apiHost, p.node.apiPort),
		"HOME":                    "/root",
	}
	order := []string{}
	for _, from := range c.EnvFrom {
		prefix := from.Prefix
		if from.ConfigMapRef != nil {
			cm, err := p.node.client.CoreV1().ConfigMaps(p.pod.Namespace).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			for k, v := range cm.Data {
				env[prefix+k] = v
			}
		}
		if from.SecretRef != nil {
			s, err := p.node.client.CoreV1().Secrets(p.pod.Namespace).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			for k, v := range s.Data {
				env[prefix+k] = string(v)
			}
		}
	}
	for _, e := range c.Env {
		value := expand(e.Value, env)
		if from := e.ValueFrom; from != nil {
			switch {
			case from.FieldRef != nil:
				value = p.fieldValue(from.FieldRef.FieldPath)
			case from.SecretKeyRef != nil:
				s, err := p.node.client.CoreV1().Secrets(p.pod.Namespace).Get(ctx, from.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				value = string(s.Data[from.SecretKeyRef.Key])
			case from.ConfigMapKeyRef != nil:
				cm, err := p.node.client.CoreV1().ConfigMaps(p.pod.Namespace).Get(ctx, from.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				value = cm.Data[from.ConfigMapKeyRef.Key]
			case from.ResourceFieldRef != nil:
				value = "0"
			}
		}
		env[e.Name] = value
		order = append(order, e.Name)
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	_ = order
	return out, nil
}

// expand replaces $(VAR) references as Kubernetes does; $$ escapes.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
					name := s[i+2 : i+2+end]
					if v, ok := env[name]; ok {
						b.WriteString(v)
						i += 2 + end
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// ---- containers ----

func (c *containerRunner) argv(env map[string]string) ([]string, error) {
	var argv []string
	if path, ok := c.pod.node.config.Images[c.spec.Image]; ok {
		argv = append(argv, path)
		if len(c.spec.Command) > 1 {
			argv = append(argv, c.spec.Command[1:]...)
		}
	} else {
		if len(c.spec.Command) == 0 {
			return nil, fmt.Errorf("image %q is not mapped to a local binary and the container has no command", c.spec.Image)
		}
		argv = append(argv, c.spec.Command...)
	}
	for _, a := range c.spec.Args {
		argv = append(argv, a)
	}
	for i := range argv {
		argv[i] = expand(argv[i], env)
	}
	return argv, nil
}

func (c *containerRunner) start(ctx context.Context, mounts []mount) error {
	p := c.pod
	env, err := p.environment(ctx, c.spec)
	if err != nil {
		return err
	}
	argv, err := c.argv(envMap(env))
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	helper := []string{"exec-container"}
	for _, m := range mounts {
		spec := m.source + ":" + m.target
		if m.readOnly {
			spec += ":ro"
		}
		helper = append(helper, "--mount", spec)
	}
	if c.spec.WorkingDir != "" {
		helper = append(helper, "--workdir", c.spec.WorkingDir)
	}
	if !p.pod.Spec.HostNetwork {
		helper = append(helper, "--netns", netnsPath(p.ip))
	}
	identity, err := p.identity(c.spec)
	if err != nil {
		return err
	}
	helper = append(helper, identity...)
	helper = append(helper, "--")
	helper = append(helper, argv...)
	logFile, err := os.OpenFile(filepath.Join(p.dir, c.spec.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(self, helper...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	logFile.Close()
	_ = os.WriteFile(filepath.Join(p.dir, c.spec.Name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	c.mu.Lock()
	c.cmd = cmd
	c.exited = make(chan struct{})
	c.state = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.Now()}}
	c.ready = false
	c.mu.Unlock()
	p.logf("container %s started (pid %d): %s", c.spec.Name, cmd.Process.Pid, strings.Join(argv, " "))
	p.markDirty()
	return nil
}

// wait blocks until the current process exits and records how.
func (c *containerRunner) wait() int32 {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	err := cmd.Wait()
	// The pid is free for reuse from now on: nobody may signal it through this file.
	_ = os.Remove(filepath.Join(c.pod.dir, c.spec.Name+".pid"))
	code := int32(0)
	reason := "Completed"
	if err != nil {
		code = 1
		reason = "Error"
		if ee, ok := err.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
				if ws.Signaled() {
					code = 128 + int32(ws.Signal())
				} else {
					code = int32(ws.ExitStatus())
				}
			}
		}
	}
	c.mu.Lock()
	var startedAt metav1.Time
	if c.state.Running != nil {
		startedAt = c.state.Running.StartedAt
	}
	c.state = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
		ExitCode: code, Reason: reason, StartedAt: startedAt, FinishedAt: metav1.Now()}}
	c.ready = false
	c.mu.Unlock()
	close(exited)
	c.pod.logf("container %s exited with %d", c.spec.Name, code)
	c.pod.markDirty()
	return code
}

func (c *containerRunner) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil || c.state.Running == nil {
		return
	}
	// The whole process group, so helpers the container started go too.
	_ = syscall.Kill(-c.cmd.Process.Pid, sig)
}

func (c *containerRunner) stopped() bool {
	select {
	case <-c.pod.stop:
		return true
	default:
		return false
	}
}

func (c *containerRunner) backoff() bool {
	c.mu.Lock()
	c.last = c.state
	c.restarts++
	delay := time.Duration(1<<min(c.restarts-1, 4)) * time.Second
	if delay > restartBackoffMax {
		delay = restartBackoffMax
	}
	waiting := v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container", delay)}}
	c.state = waiting
	c.mu.Unlock()
	c.pod.markDirty()
	select {
	case <-c.pod.stop:
		return false
	case <-time.After(delay):
		return true
	}
}

// held reports whether the pod is held down: the file hold/<namespace>_<name> in the node's
// state directory (made by `pod-signal … DOWN`) keeps its containers from (re)starting, as a
// dead node would, until it is removed (`pod-signal … UP`).
func (p *podRunner) held() bool {
	_, err := os.Stat(filepath.Join(p.node.stateDir, "hold", p.pod.Namespace+"_"+p.pod.Name))
	return err == nil
}

// waitWhileHeld blocks while the pod is held down; false if the pod is stopped meanwhile.
func (c *containerRunner) waitWhileHeld() bool {
	if !c.pod.held() {
		return true
	}
	c.mu.Lock()
	c.state = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "NodeDown",
		Message: "held down by pod-signal DOWN"}}
	c.mu.Unlock()
	c.pod.markDirty()
	for c.pod.held() {
		select {
		case <-c.pod.stop:
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	return true
}

func (c *containerRunner) supervise(ctx context.Context, mounts []mount) {
	policy := c.pod.pod.Spec.RestartPolicy
	for !c.stopped() {
		if !c.waitWhileHeld() {
			break
		}
		if err := c.start(ctx, mounts); err != nil {
			c.mu.Lock()
			c.state = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerError", Message: err.Error()}}
			c.mu.Unlock()
			c.pod.logf("container %s: %v", c.spec.Name, err)
			c.pod.markDirty()
			if !c.backoff() {
				break
			}
			continue
		}
		code := c.wait()
		if c.stopped() || policy == v1.RestartPolicyNever || (policy == v1.RestartPolicyOnFailure && code == 0) {
			break
		}
		if !c.backoff() {
			break
		}
	}
	c.mu.Lock()
	if c.exited != nil {
		select {
		case <-c.exited:
		default:
			close(c.exited)
		}
	}
	c.mu.Unlock()
}

func (c *containerRunner) runToCompletion(ctx context.Context, mounts []mount) bool {
	for !c.stopped() {
		if err := c.start(ctx, mounts); err != nil {
			c.pod.logf("init container %s: %v", c.spec.Name, err)
		} else if c.wait() == 0 {
			return true
		}
		if c.pod.pod.Spec.RestartPolicy == v1.RestartPolicyNever || !c.backoff() {
			return false
		}
	}
	return false
}

// ---- probes ----

func (c *containerRunner) probe(ctx context.Context) {
	readiness, liveness := c.spec.ReadinessProbe, c.spec.LivenessProbe
	if readiness == nil {
		// No readiness probe: ready while running.
		for !c.stopped() {
			c.mu.Lock()
			ready := c.state.Running != nil
			changed := ready != c.ready
			c.ready = ready
			c.mu.Unlock()
			if changed {
				c.pod.markDirty()
			}
			select {
			case <-c.pod.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if readiness != nil {
		go c.probeLoop(ctx, readiness, func(ok bool) {
			c.mu.Lock()
			ready := ok && c.state.Running != nil
			changed := ready != c.ready
			c.ready = ready
			c.mu.Unlock()
			if changed {
				c.pod.markDirty()
			}
		})
	}
	if liveness != nil {
		go c.probeLoop(ctx, liveness, func(ok bool) {
			// A container that is not running (not started yet, or restarting) has nothing to
			// kill: only a running one that fails its probe is.
			c.mu.Lock()
			running := c.state.Running != nil
			c.mu.Unlock()
			if !ok && running {
				c.pod.logf("container %s failed its liveness probe; killing it", c.spec.Name)
				c.signal(syscall.SIGKILL)
			}
		})
	}
}

// probeLoop runs a probe and reports results after the thresholds are crossed.
func (c *containerRunner) probeLoop(ctx context.Context, pr *v1.Probe, report func(bool)) {
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	failThreshold, successThreshold := max(pr.FailureThreshold, 1), max(pr.SuccessThreshold, 1)
	select {
	case <-c.pod.stop:
		return
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	var fails, successes int32
	for !c.stopped() {
		c.mu.Lock()
		running := c.state.Running != nil
		c.mu.Unlock()
		if running {
			if c.check(pr) {
				successes++
				fails = 0
				if successes >= successThreshold {
					report(true)
				}
			} else {
				fails++
				successes = 0
				if fails >= failThreshold {
					report(false)
					fails = 0
				}
			}
		} else {
			fails, successes = 0, 0
			report(false)
		}
		select {
		case <-c.pod.stop:
			return
		case <-time.After(period):
		}
	}
}

func (c *containerRunner) port(p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

func (c *containerRunner) check(pr *v1.Probe) bool {
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	switch {
	case pr.HTTPGet != nil:
		host := pr.HTTPGet.Host
		if host == "" {
			host = c.pod.ip
		}
		scheme := strings.ToLower(string(pr.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(c.port(pr.HTTPGet.Port))), pr.HTTPGet.Path)
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		for _, h := range pr.HTTPGet.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		resp, err := (&http.Client{Timeout: timeout}).Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case pr.TCPSocket != nil:
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(c.pod.ip, strconv.Itoa(c.port(pr.TCPSocket.Port))), timeout)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	case pr.Exec != nil && len(pr.Exec.Command) > 0:
		// In the pod's network namespace (as root, without the container's mounts).
		argv := pr.Exec.Command
		if !c.pod.pod.Spec.HostNetwork {
			self, err := os.Executable()
			if err != nil {
				return false
			}
			argv = append([]string{self, "exec-container", "--netns", netnsPath(c.pod.ip), "--"}, argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		return cmd.Run() == nil
	}
	return false
}

// ---- status ----

func (p *podRunner) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.dirty:
		case <-time.After(5 * time.Second):
		}
		if err := p.pushStatus(ctx); err != nil && !apierrors.IsNotFound(err) {
			p.logf("status update: %v", err)
		}
		p.mu.Lock()
		done := p.terminated
		p.mu.Unlock()
		if done {
			// One last update happened above; the pod object is about to be deleted.
			return
		}
	}
}

func containerStatus(c *containerRunner) v1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := ""
	if c.cmd != nil && c.cmd.Process != nil {
		id = fmt.Sprintf("process://%d", c.cmd.Process.Pid)
	}
	return v1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, ImageID: "process://" + c.spec.Image, ContainerID: id,
		State: c.state, LastTerminationState: c.last, Ready: c.ready, RestartCount: c.restarts,
		Started: ptr.To(c.state.Running != nil),
	}
}

// pushStatus writes the pod's status when it differs from what the API server has, as a
// kubelet does: the pod comes from the informer's cache (read from the API server only after a
// conflict), and an unchanged status is not written.
func (p *podRunner) pushStatus(ctx context.Context) error {
	fromCache := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var pod *v1.Pod
		if cached, ok, _ := p.node.podCache.GetByKey(p.pod.Namespace + "/" + p.pod.Name); fromCache && ok {
			pod = cached.(*v1.Pod).DeepCopy()
		} else {
			fresh, err := p.node.client.CoreV1().Pods(p.pod.Namespace).Get(ctx, p.pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			pod = fresh
		}
		fromCache = false
		if string(pod.UID) != p.uid {
			return nil
		}
		before := pod.Status.DeepCopy()
		p.mu.Lock()
		containers := append([]*containerRunner(nil), p.containers...)
		initDone := p.initDone
		p.mu.Unlock()
		var statuses, initStatuses []v1.ContainerStatus
		allReady, anyRunning, allDone, anyFailed := true, false, true, false
		for _, c := range containers {
			st := containerStatus(c)
			if c.init {
				initStatuses = append(initStatuses, st)
				continue
			}
			statuses = append(statuses, st)
			allReady = allReady && st.Ready
			anyRunning = anyRunning || st.State.Running != nil
			if st.State.Terminated == nil {
				allDone = false
			} else if st.State.Terminated.ExitCode != 0 {
				anyFailed = true
			}
		}
		if len(statuses) < len(pod.Spec.Containers) {
			allReady = false
			allDone = false
			for _, spec := range pod.Spec.Containers[len(statuses):] {
				statuses = append(statuses, v1.ContainerStatus{Name: spec.Name, Image: spec.Image,
					State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}})
			}
		}
		phase := v1.PodPending
		switch {
		case anyRunning:
			phase = v1.PodRunning
		case allDone && len(containers) > 0 && pod.Spec.RestartPolicy != v1.RestartPolicyAlways:
			phase = v1.PodSucceeded
			if anyFailed {
				phase = v1.PodFailed
			}
		case len(containers) > 0 && initDone:
			phase = v1.PodRunning
		}
		now := metav1.Now()
		cond := func(t v1.PodConditionType, ok bool) v1.PodCondition {
			s := v1.ConditionFalse
			if ok {
				s = v1.ConditionTrue
			}
			for _, old := range pod.Status.Conditions {
				if old.Type == t && old.Status == s {
					return old
				}
			}
			return v1.PodCondition{Type: t, Status: s, LastTransitionTime: now}
		}
		pod.Status.Phase = phase
		pod.Status.HostIP = "127.0.0.1"
		pod.Status.HostIPs = []v1.HostIP{{IP: "127.0.0.1"}}
		pod.Status.PodIP = p.ip
		pod.Status.PodIPs = []v1.PodIP{{IP: p.ip}}
		pod.Status.StartTime = &p.started
		pod.Status.ContainerStatuses = statuses
		pod.Status.InitContainerStatuses = initStatuses
		// The API server sets the QoS class at creation from the pod's resources and it is
		// immutable; only fill it in if it is missing.
		if pod.Status.QOSClass == "" {
			pod.Status.QOSClass = v1.PodQOSBestEffort
		}
		pod.Status.Conditions = []v1.PodCondition{
			cond(v1.PodScheduled, true),
			cond(v1.PodInitialized, initDone),
			cond(v1.ContainersReady, allReady && anyRunning),
			cond(v1.PodReady, allReady && anyRunning),
		}
		// Compared as the API server stores them (times in whole seconds).
		was, _ := json.Marshal(before)
		is, _ := json.Marshal(&pod.Status)
		if string(was) == string(is) {
			return nil
		}
		_, err := p.node.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}
