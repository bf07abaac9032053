// Command keyprobe prints the vendor key built into it; vendorkey_test.go
// builds it with -ldflags -X to check the release-build injection path.
package main

import (
	"fmt"
	"os"

	"github.com/edgepbx/edgepbx/firmware/license"
)

func main() {
	k, err := license.BuiltinVendorKey()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(license.FormatPublicKey(k))
}
