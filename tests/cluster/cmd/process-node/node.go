package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

const (
	// StorageClass served by this node's provisioner; made the cluster default.
	storageClassName = "standard"
	provisionerName  = "strand.test/process-node"
	heartbeatPeriod  = 10 * time.Second
	leaseDuration    = 40
)

func (n *Node) nodeStatus() v1.NodeStatus {
	now := metav1.Now()
	capacity := v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("8"),
		v1.ResourceMemory:           resource.MustParse("24Gi"),
		v1.ResourcePods:             *resource.NewQuantity(int64(n.maxPods), resource.DecimalSI),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return v1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions: []v1.NodeCondition{
			cond(v1.NodeReady, v1.ConditionTrue, "ProcessNodeReady", "process-node is running pods as local processes"),
			cond(v1.NodeMemoryPressure, v1.ConditionFalse, "NoPressure", ""),
			cond(v1.NodeDiskPressure, v1.ConditionFalse, "NoPressure", ""),
			cond(v1.NodePIDPressure, v1.ConditionFalse, "NoPressure", ""),
			cond(v1.NodeNetworkUnavailable, v1.ConditionFalse, "LoopbackNetwork", ""),
		},
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: v1.NodeHostName, Address: n.name},
		},
		DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(n.kubeletPort)}},
		NodeInfo: v1.NodeSystemInfo{
			KubeletVersion:          "process-node",
			ContainerRuntimeVersion: "process://local",
			OperatingSystem:         "linux",
			Architecture:            "amd64",
		},
	}
}

// register creates (or refreshes) the Node object, the lease namespace's Lease and the default
// StorageClass.
func (n *Node) register(ctx context.Context) error {
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{
			"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"strand.test/process-node": "true",
		}},
	}
	created, err := n.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	created.Status = n.nodeStatus()
	if _, err := n.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: storageClassName, Annotations: map[string]string{
			"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       provisionerName,
		ReclaimPolicy:     ptr.To(v1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
	if _, err := n.client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("storage class: %w", err)
	}
	return nil
}

// heartbeat renews the node Lease and the Ready condition so the node lifecycle controller
// keeps the node Ready (and does not evict its pods).
func (n *Node) heartbeat(ctx context.Context) {
	leases := n.client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, n.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			lease = &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: n.name, Namespace: v1.NamespaceNodeLease},
				Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(n.name), LeaseDurationSeconds: ptr.To(int32(leaseDuration)), RenewTime: &now}}
			_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		} else if err == nil {
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			log.Printf("lease renewal failed: %v", err)
		}
		node, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err == nil {
			node.Status = n.nodeStatus()
			_, err = n.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			log.Printf("node status update failed: %v", err)
		}
	}, heartbeatPeriod)
}

// provision binds every pending claim of our StorageClass to a new PersistentVolume backed by a
// directory under the state dir, and deletes released volumes (and their directories).
func (n *Node) provision(ctx context.Context) {
	pvcWatch := cache.NewListWatchFromClient(n.client.CoreV1().RESTClient(), "persistentvolumeclaims", v1.NamespaceAll, fields.Everything())
	_, pvcController := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: pvcWatch, ObjectType: &v1.PersistentVolumeClaim{}, ResyncPeriod: 30 * time.Second,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj interface{}) { n.provisionClaim(ctx, obj) },
			UpdateFunc: func(_, obj interface{}) { n.provisionClaim(ctx, obj) },
		},
	})
	pvWatch := cache.NewListWatchFromClient(n.client.CoreV1().RESTClient(), "persistentvolumes", v1.NamespaceAll, fields.Everything())
	_, pvController := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: pvWatch, ObjectType: &v1.PersistentVolume{}, ResyncPeriod: 30 * time.Second,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj interface{}) { n.reclaim(ctx, obj) },
			UpdateFunc: func(_, obj interface{}) { n.reclaim(ctx, obj) },
		},
	})
	go pvController.Run(ctx.Done())
	pvcController.Run(ctx.Done())
}

func (n *Node) provisionClaim(ctx context.Context, obj interface{}) {
	pvc, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil {
		return
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != storageClassName {
		return
	}
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(n.stateDir, "pv", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Printf("provision %s/%s: %v", pvc.Namespace, pvc.Name, err)
		return
	}
	size := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			"pv.kubernetes.io/provisioned-by": provisionerName}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			StorageClassName:              storageClassName,
			PersistentVolumeSource: v1.PersistentVolumeSource{
				HostPath: &v1.HostPathVolumeSource{Path: dir, Type: ptr.To(v1.HostPathDirectoryOrCreate)}},
			ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: pvc.Namespace, Name: pvc.Name,
				UID: pvc.UID, APIVersion: "v1"},
		},
	}
	if _, err := n.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		log.Printf("create volume for %s/%s: %v", pvc.Namespace, pvc.Name, err)
		return
	}
	log.Printf("provisioned %s for %s/%s at %s", name, pvc.Namespace, pvc.Name, dir)
}

func (n *Node) reclaim(ctx context.Context, obj interface{}) {
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok || pv.Annotations["pv.kubernetes.io/provisioned-by"] != provisionerName {
		return
	}
	if pv.Status.Phase != v1.VolumeReleased || pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
		return
	}
	if pv.Spec.HostPath != nil {
		if err := os.RemoveAll(pv.Spec.HostPath.Path); err != nil {
			log.Printf("remove %s: %v", pv.Spec.HostPath.Path, err)
			return
		}
	}
	if err := n.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		log.Printf("delete volume %s: %v", pv.Name, err)
	}
}
