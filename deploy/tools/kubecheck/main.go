// kubecheck validates rendered Kubernetes manifests (multi-document YAML on stdin, as `helm template` prints) against
// the Kubernetes API types: every document must be a kind it knows, and decode strictly into that kind's Go type
// (no unknown or duplicate field, every value of the right type). The API's OpenAPI schemas are generated from
// these same types, so this is the schema check without fetching schema files (only the Go proxy is reachable).
//
// Exit 0 and one line per document when all are valid; exit 1 with one line per invalid document otherwise.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kinds maps apiVersion/kind to a new value of its API type.
var kinds = map[string]func() any{
	"v1/ConfigMap":                              func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                 func() any { return &corev1.Secret{} },
	"v1/Service":                                func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                         func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                  func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                                    func() any { return &corev1.Pod{} },
	"apps/v1/StatefulSet":                       func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":                        func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                              func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":             func() any { return &policyv1.PodDisruptionBudget{} },
	"rbac.authorization.k8s.io/v1/Role":         func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":  func() any { return &rbacv1.RoleBinding{} },
	"monitoring.coreos.com/v1/PodMonitor":       func() any { return &monitoringv1.PodMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule":   func() any { return &monitoringv1.PrometheusRule{} },
	"monitoring.coreos.com/v1/ServiceMonitor":   func() any { return &monitoringv1.ServiceMonitor{} },
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func check(doc []byte) (string, error) {
	var h header
	if err := yaml.Unmarshal(doc, &h); err != nil {
		return "", fmt.Errorf("not YAML: %w", err)
	}
	name := fmt.Sprintf("%s/%s %s", h.APIVersion, h.Kind, h.Metadata.Name)
	newValue, ok := kinds[h.APIVersion+"/"+h.Kind]
	if !ok {
		return name, fmt.Errorf("no schema known for %s/%s", h.APIVersion, h.Kind)
	}
	if h.Metadata.Name == "" {
		return name, fmt.Errorf("metadata.name is missing")
	}
	if err := yaml.UnmarshalStrict(doc, newValue()); err != nil {
		return name, err
	}
	return name, nil
}

func main() {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	bad, count := 0, 0
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubecheck: cannot read the input: %v\n", err)
			os.Exit(2)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil || len(probe) == 0 || len(bytes.TrimSpace(doc)) == 0 {
			if err != nil {
				fmt.Printf("INVALID document %d: %v\n", count+1, err)
				bad++
			}
			continue // an empty document (comments only)
		}
		count++
		name, err := check(doc)
		if err != nil {
			fmt.Printf("INVALID %s: %v\n", name, err)
			bad++
			continue
		}
		fmt.Printf("valid %s\n", name)
	}
	if bad > 0 || count == 0 {
		fmt.Fprintf(os.Stderr, "kubecheck: %d of %d documents invalid\n", bad, count)
		os.Exit(1)
	}
}
