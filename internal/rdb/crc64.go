package rdb

import "hash/crc64"

// Redis checksums RDB files with CRC-64/Jones: polynomial 0xad93d23594c935a9
// (0x95ac9329ac4bc9b5 reflected), reflected input and output, initial value
// 0 and no final XOR.
var jonesTable = crc64.MakeTable(0x95ac9329ac4bc9b5)

// crc64Jones extends crc with p. The standard library complements the value
// before and after each update (CRC-64/ISO style); Redis does not, so the
// complements are undone here. The library's slicing-by-8 stays in use.
func crc64Jones(crc uint64, p []byte) uint64 {
	return ^crc64.Update(^crc, jonesTable, p)
}
