package aggregate

import _ "embed"

// OpenAPI is the description of the query API (openapi.yaml), served by the aggregate role at
// /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
