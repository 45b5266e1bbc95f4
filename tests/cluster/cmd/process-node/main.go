// process-node plays the kubelet for Strand's local test control plane: it registers a Node,
// provisions PersistentVolumes as directories, and runs each pod bound to it as local
// processes (no containers, no images: image names map to local binaries).
//
// It is test-only and deliberately small. What it emulates and what it does not is written
// down in docs/testing.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Config is the image map: image reference → local executable.
type Config struct {
	Images map[string]string `json:"images"`
}

type Node struct {
	client      kubernetes.Interface
	name        string
	stateDir    string
	config      Config
	apiHost     string
	apiPort     string
	podNets     []string // first three octets of each /24 this node's pod addresses come from, e.g. "198.18.7"
	maxPods     int
	kubeletPort int
	podCache    cache.Store // this node's pods as the informer last saw them

	mu     sync.Mutex
	pods   map[string]*podRunner // by pod UID
	ips    map[string]bool       // pod IPs in use
	nextIP uint32
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exec-container" {
		execContainer(os.Args[2:]) // never returns
	}
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of a user allowed to act as the node")
	name := flag.String("node-name", "strand-node", "name of the Node to register")
	stateDir := flag.String("state-dir", "", "directory for pod state, logs and volumes")
	images := flag.String("images", "", "JSON file mapping image references to local executables")
	apiHost := flag.String("api-host", "10.96.0.1", "KUBERNETES_SERVICE_HOST given to pods: this node relays it to the API server on 127.0.0.1")
	apiPort := flag.String("api-port", "", "KUBERNETES_SERVICE_PORT given to pods, and the API server's port on 127.0.0.1")
	podNet := flag.String("pod-net", "198.18.0", "pods get addresses <pod-net>.x (a comma-separated list for more than 254 pods); give each node on a machine its own")
	maxPods := flag.Int("max-pods", 110, "pods this node holds (its pod capacity)")
	kubeletPort := flag.Int("kubelet-port", 0, "port of the kubelet API (port-forward) on 127.0.0.1; 0: not served")
	kubeletCert := flag.String("kubelet-cert", "", "serving certificate of the kubelet API")
	kubeletKey := flag.String("kubelet-key", "", "its key")
	clientCA := flag.String("client-ca", "", "CA whose client certificates the kubelet API accepts (the API server's)")
	flag.Parse()
	if *kubeconfig == "" || *stateDir == "" || *apiPort == "" {
		log.Fatal("--kubeconfig, --state-dir and --api-port are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("load kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatalf("client: %v", err)
	}
	node := &Node{
		client: client, name: *name, stateDir: *stateDir, apiHost: *apiHost, apiPort: *apiPort, podNets: strings.Split(*podNet, ","), maxPods: *maxPods,
		kubeletPort: *kubeletPort,
		pods:        map[string]*podRunner{}, ips: map[string]bool{},
	}
	if *images != "" {
		if err := node.loadImages(*images); err != nil {
			log.Fatalf("images: %v", err)
		}
	}
	for _, d := range []string{"pods", "pv"} {
		if err := os.MkdirAll(filepath.Join(*stateDir, d), 0o755); err != nil {
			log.Fatalf("state dir: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := node.setupHostNetwork(ctx); err != nil {
		log.Fatalf("host network: %v", err)
	}
	if *kubeletPort != 0 {
		if err := node.serveKubelet(ctx, *kubeletPort, *kubeletCert, *kubeletKey, *clientCA); err != nil {
			log.Fatalf("kubelet API: %v", err)
		}
	}
	if err := node.register(ctx); err != nil {
		log.Fatalf("register node: %v", err)
	}
	go node.heartbeat(ctx)
	go node.provision(ctx)

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" + *name }))
	podInformer := factory.Core().V1().Pods().Informer()
	node.podCache = podInformer.GetStore()
	_, err = podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { node.sync(ctx, obj) },
		UpdateFunc: func(_, obj interface{}) { node.sync(ctx, obj) },
		DeleteFunc: func(obj interface{}) { node.forget(obj) },
	})
	if err != nil {
		log.Fatalf("informer: %v", err)
	}
	factory.Start(ctx.Done())
	log.Printf("node %s running; state in %s", *name, *stateDir)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	log.Printf("stopping: terminating all pods")
	node.stopAll()
}

func (n *Node) loadImages(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &n.config); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// sync starts a runner for a new pod, or begins termination of a pod being deleted.
func (n *Node) sync(ctx context.Context, obj interface{}) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	n.mu.Lock()
	runner, exists := n.pods[string(pod.UID)]
	if !exists {
		if pod.DeletionTimestamp != nil || pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
			n.mu.Unlock()
			if pod.DeletionTimestamp != nil {
				go n.finalDelete(ctx, pod)
			}
			return
		}
		runner = newPodRunner(n, pod)
		n.pods[string(pod.UID)] = runner
		n.mu.Unlock()
		go runner.run(ctx)
		return
	}
	n.mu.Unlock()
	runner.update(pod)
}

func (n *Node) forget(obj interface{}) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			pod, _ = tomb.Obj.(*v1.Pod)
		}
	}
	if pod == nil {
		return
	}
	n.mu.Lock()
	runner := n.pods[string(pod.UID)]
	n.mu.Unlock()
	if runner != nil {
		runner.kill()
	}
}

func (n *Node) remove(uid string, ip string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.pods, uid)
	if n.ips[ip] {
		delete(n.ips, ip)
		delAddress(ip)
		teardownPodNetwork(ip)
	}
}

// allocateIP hands out a free address <podNet>.x for a pod (see network.go for where it is put:
// not in 127/8, which Kubernetes refuses as an endpoint).
func (n *Node) allocateIP() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	total := uint32(254 * len(n.podNets))
	for tries := uint32(0); tries < total; tries++ {
		n.nextIP = n.nextIP%total + 1
		net, host := n.podNets[(n.nextIP-1)/254], (n.nextIP-1)%254+1
		ip := fmt.Sprintf("%s.%d", net, host)
		if !n.ips[ip] {
			n.ips[ip] = true
			return ip, nil
		}
	}
	return "", fmt.Errorf("all %d pod addresses of %v are in use", total, n.podNets)
}

// addAddress puts a hostNetwork pod's address on the loopback device.
func addAddress(ip string) error {
	out, err := exec.Command("ip", "addr", "add", ip+"/32", "dev", "lo").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "File exists") {
		return fmt.Errorf("cannot add pod address %s to lo (the process node needs root and iproute2): %v: %s", ip, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func delAddress(ip string) {
	_ = exec.Command("ip", "addr", "del", ip+"/32", "dev", "lo").Run()
}

func (n *Node) stopAll() {
	n.mu.Lock()
	runners := make([]*podRunner, 0, len(n.pods))
	for _, r := range n.pods {
		runners = append(runners, r)
	}
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func(r *podRunner) {
			defer wg.Done()
			r.terminate(10 * time.Second)
		}(r)
	}
	wg.Wait()
	n.mu.Lock()
	defer n.mu.Unlock()
	for ip := range n.ips {
		delAddress(ip)
		teardownPodNetwork(ip)
		delete(n.ips, ip)
	}
}
