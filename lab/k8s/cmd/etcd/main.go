// etcd for the tests, at the version the pinned Kubernetes release requires (see go.mod).
// Same main as etcd's own server/main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
