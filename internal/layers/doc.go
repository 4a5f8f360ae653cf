// Package layers holds no code. Its tests keep the README's layout honest: the layout block of
// README.md lists every package of `go list ./...` (and nothing that is not one, unless marked
// "(not Go)"), grouped under layer headings, lowest first; and no package imports, outside its
// tests, a package of a higher layer (docs/DESIGN.md §10).
//
// The block's grammar, which a reader follows without knowing it:
//
//	layer 1 — foundations: what the line says about the layer
//	  config/             one line of description
//	                      continued on lines indented further
//	  docs/promises.md    (not Go) a file, or a directory marked as holding no Go package
//	outside the layers — any heading that does not start with "layer N —"
//
// A heading starts at the first column; "layer N — name" opens layer N (numbers increase down
// the block), any other heading a group outside the layers, which may hold only non-Go
// entries. An entry is indented by exactly two spaces: its path (a directory ends in "/"), then
// its description. A package may import packages of its own layer and of lower ones. Adding a
// package is adding its line under its layer.
package layers
