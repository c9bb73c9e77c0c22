// Command validate checks the Kubernetes examples in deploy/kubernetes
// against the Kubernetes API's own types: every document must decode
// strictly (no unknown or misspelt field) into the type of its kind, and
// every probe must name a port its container declares. It is its own
// module, so that the relay does not depend on the Kubernetes libraries;
// test.sh runs it.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	dir := ".."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		fmt.Fprintf(os.Stderr, "no *.yaml in %s\n", dir)
		os.Exit(1)
	}
	bad := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if err := check(doc); err != nil {
				fmt.Fprintf(os.Stderr, "%s, document %d: %v\n", f, i+1, err)
				bad++
			}
		}
	}
	if bad > 0 {
		os.Exit(1)
	}
	fmt.Printf("%d file(s) valid against the Kubernetes API types\n", len(files))
}

// check decodes one document strictly into the type of its kind.
func check(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "apps/v1 StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	default:
		return fmt.Errorf("kind %q of apiVersion %q is not one this check knows", tm.Kind, tm.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	switch o := obj.(type) {
	case *appsv1.StatefulSet:
		return probes(o.Spec.Template.Spec)
	case *appsv1.Deployment:
		return probes(o.Spec.Template.Spec)
	}
	return nil
}

// probes checks that each probe's named port is declared.
func probes(p corev1.PodSpec) error {
	for _, c := range p.Containers {
		ports := map[string]bool{}
		for _, cp := range c.Ports {
			ports[cp.Name] = true
		}
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if pr == nil {
				continue
			}
			var name string
			switch {
			case pr.HTTPGet != nil:
				name = pr.HTTPGet.Port.StrVal
			case pr.TCPSocket != nil:
				name = pr.TCPSocket.Port.StrVal
			}
			if name != "" && !ports[name] {
				return fmt.Errorf("container %s: a probe names port %q, which it does not declare", c.Name, name)
			}
		}
	}
	return nil
}
