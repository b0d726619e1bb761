package crypto

import (
	"reflect"
	"testing"
)

// FuzzParseKeyFile checks that ParseKeyFile never panics on hostile input
// and that every key file it accepts marshals to a document it accepts again
// with the same content.
func FuzzParseKeyFile(f *testing.F) {
	var m [MasterKeySize]byte
	k, err := KeyFromMaster(m)
	if err != nil {
		f.Fatal(err)
	}
	kf, err := NewKeyFile(k, "pw", testKDF, "host", "user")
	if err != nil {
		f.Fatal(err)
	}
	valid, err := kf.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	kf.Hostname, kf.Username = "", ""
	kf.Params = KDFParams{Time: 100, MemoryKiB: maxKDFMemoryKiB, Threads: 255}
	if b, err := kf.Marshal(); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"created":"2024-01-02T03:04:05+01:00","kdf":"argon2id","kdf_params":{"time":1,"memory_kib":8,"threads":1},` +
		`"salt":"AAAAAAAAAAAAAAAAAAAAAA==","master_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKeyFile(data)
		if err != nil {
			if kf != nil {
				t.Fatalf("ParseKeyFile returned a key file and an error: %v", err)
			}
			return
		}
		b, err := kf.Marshal()
		if err != nil {
			t.Fatalf("accepted key file does not marshal: %v", err)
		}
		kf2, err := ParseKeyFile(b)
		if err != nil {
			t.Fatalf("re-marshaled key file does not parse: %v\n%s", err, b)
		}
		if !kf2.Created.Equal(kf.Created) {
			t.Fatalf("created changed: %v -> %v", kf.Created, kf2.Created)
		}
		a, c := *kf, *kf2
		a.Created = c.Created
		if !reflect.DeepEqual(a, c) {
			t.Fatalf("key file changed in a marshal round trip:\n%+v\n%+v", a, c)
		}
		// Never open: a hostile key file may ask for gigabytes of argon2 memory.
	})
}
