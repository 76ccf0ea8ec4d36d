package agent

import (
	"net"
	"testing"
)

func TestIPPoolHandsOutDistinctLoopbackAddressesRoundRobin(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("127.0.10.0/29") // .2 to .6 usable
	pool := newIPPool(subnet)
	seen := map[string]bool{}
	for range 5 {
		ip, err := pool.allocate()
		if err != nil {
			t.Fatal(err)
		}
		if seen[ip] || ip == "127.0.10.0" || ip == "127.0.10.1" || ip == "127.0.10.7" {
			t.Fatalf("allocate() = %s; seen %v", ip, seen)
		}
		seen[ip] = true
	}
	if _, err := pool.allocate(); err == nil {
		t.Fatal("allocate() on a full pool succeeded")
	}
	var freed string
	for ip := range seen {
		freed = ip
		break
	}
	pool.release(freed)
	if ip, err := pool.allocate(); err != nil || ip != freed {
		t.Fatalf("allocate() after release = %s, %v; want %s", ip, err, freed)
	}
}
