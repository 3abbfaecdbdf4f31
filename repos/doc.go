// Package repos holds hsdal's typed repositories for users, devices, access
// tokens, rooms, memberships, room events and private messages. Every read
// filters soft-deleted rows and every list is paginated by keyset.
package repos
