package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
)

// The kubelet API, as far as the tests use it: `/portForward/{namespace}/{pod}`, which the API
// server calls for `kubectl port-forward`. It is served over TLS with a certificate from the
// cluster's CA and accepts only clients holding a certificate from that CA (the API server's
// kubelet client certificate). Streams are SPDY, as a kubelet without the
// ExtendWebSocketsToKubelet feature speaks; the API server translates kubectl's WebSockets.

// serveKubelet listens on 127.0.0.1:port until ctx ends.
func (n *Node) serveKubelet(ctx context.Context, port int, certFile, keyFile, caFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("kubelet serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("kubelet client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("kubelet client CA %s holds no certificate", caFile)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/portForward/{namespace}/{pod}", n.portForward)
	mux.HandleFunc("/portForward/{namespace}/{pod}/{uid}", n.portForward)
	srv := &http.Server{
		Addr:    fmt.Sprintf("127.0.0.1:%d", port),
		Handler: mux,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	// Bound here, so a port that cannot be had stops the node instead of being advertised.
	l, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("kubelet API on %s: %w", srv.Addr, err)
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && err != http.ErrServerClosed {
			log.Fatalf("kubelet API stopped: %v", err)
		}
	}()
	return nil
}

func (n *Node) portForward(w http.ResponseWriter, req *http.Request) {
	ns, name, uid := req.PathValue("namespace"), req.PathValue("pod"), req.PathValue("uid")
	runner := n.runnerByName(ns, name)
	if runner == nil || (uid != "" && uid != runner.uid) {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on this node", ns, name), http.StatusNotFound)
		return
	}
	if runner.hostNetwork() {
		http.Error(w, "port-forward to a hostNetwork pod is not supported by the process node", http.StatusBadRequest)
		return
	}
	var opts *portforward.V4Options
	if wsstream.IsWebSocketRequest(req) {
		// WebSocket clients name their ports in the query (the API server speaks SPDY to a
		// kubelet that does not declare ExtendWebSocketsToKubelet, but refuse nothing).
		o, err := portforward.NewV4Options(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		opts = o
	}
	portforward.ServePortForward(w, req, podForwarder{runner}, name, runner.uid, opts,
		4*time.Hour, 30*time.Second, portforward.SupportedProtocols)
}

func (n *Node) runnerByName(namespace, name string) *podRunner {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.pods {
		r.mu.Lock()
		match := r.pod.Namespace == namespace && r.pod.Name == name && !r.terminated
		r.mu.Unlock()
		if match {
			return r
		}
	}
	return nil
}

// podForwarder copies a port-forward stream to 127.0.0.1:port in the pod's network namespace.
type podForwarder struct{ pod *podRunner }

func (f podForwarder) PortForward(ctx context.Context, _ string, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	conn, err := dialInPod(ctx, f.pod.ip, port)
	if err != nil {
		return fmt.Errorf("port %d in pod %s: %w", port, f.pod.pod.Name, err)
	}
	defer conn.Close()
	if err := splice(stream, conn); err != nil && !strings.Contains(err.Error(), "closed") {
		return err
	}
	return nil
}

func (p *podRunner) hostNetwork() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pod.Spec.HostNetwork
}
