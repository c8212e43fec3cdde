// Package config holds the demo data files, embedded so that the mocker
// binary and the images need no file on disk: demo-networks.yml (customer
// and infrastructure prefixes) and demo-exporters.yml (routers and their
// interfaces), in the enricher's formats (docs/enricher.md).
package config

import _ "embed"

// File names of the demo files in this folder, as compose mounts them.
const (
	DemoNetworksFile  = "demo-networks.yml"
	DemoExportersFile = "demo-exporters.yml"
)

// DemoNetworks is demo-networks.yml.
//
//go:embed demo-networks.yml
var DemoNetworks []byte

// DemoExporters is demo-exporters.yml.
//
//go:embed demo-exporters.yml
var DemoExporters []byte
