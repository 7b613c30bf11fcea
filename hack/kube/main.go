// Command kube is one multi-call binary holding kube-apiserver, kube-controller-manager and
// kube-scheduler, built from the Kubernetes Go modules so tests run against the real control plane.
//
// Usage: kube apiserver|controller-manager|scheduler [flags...]
// (or invoked through a symlink named kube-apiserver, kube-controller-manager or kube-scheduler).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	name := strings.TrimPrefix(filepath.Base(os.Args[0]), "kube-")
	args := os.Args[1:]
	if name == "kube" || name == "" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "usage: kube apiserver|controller-manager|scheduler [flags...]")
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	var command *cobra.Command
	switch name {
	case "apiserver":
		command = apiserver.NewAPIServerCommand()
	case "controller-manager":
		command = controllermanager.NewControllerManagerCommand()
	case "scheduler":
		command = scheduler.NewSchedulerCommand()
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q\n", name)
		os.Exit(2)
	}
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}
