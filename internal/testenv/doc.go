// Package testenv holds the policy tests follow when a real component
// they need (PostgreSQL, an S3 server) is missing: skip on a developer's
// machine, fail when CI=true, so CI can never pass by skipping.
package testenv
