package agent

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
)

// ipPool hands out pod IPs from the node's loopback subnet. Every 127.0.0.0/8 address is local
// on Linux, so a process can bind its pod IP without any network setup.
//
// Addresses are handed out round-robin from a random start, never lowest-free: a port a
// finished pod served from lingers in TIME_WAIT for a minute, and the next pod given the same
// address (in this run or the next cluster's) could not listen on it.
type ipPool struct {
	mu     sync.Mutex
	subnet *net.IPNet
	used   map[string]bool
	next   int
}

func newIPPool(subnet *net.IPNet) *ipPool {
	ones, bits := subnet.Mask.Size()
	size := 1 << (bits - ones)
	return &ipPool{subnet: subnet, used: map[string]bool{}, next: 2 + rand.IntN(max(size-3, 1))}
}

// allocate returns a free address; .0, .1 and the last of the subnet are never handed out.
func (p *ipPool) allocate() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	base := p.subnet.IP.To4()
	ones, bits := p.subnet.Mask.Size()
	size := 1 << (bits - ones)
	for range size - 3 {
		i := p.next
		p.next++
		if p.next >= size-1 {
			p.next = 2
		}
		ip := net.IPv4(base[0], base[1], base[2]+byte(i>>8), base[3]+byte(i&0xff)).String()
		if !p.used[ip] {
			p.used[ip] = true
			return ip, nil
		}
	}
	return "", fmt.Errorf("pod subnet %s: all %d addresses in use", p.subnet, size-3)
}

func (p *ipPool) release(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, ip)
}

// gpuPool hands out GPU indices of the node. The scheduler already counted the requests against
// the node's capacity; the indices only tell each pod which devices are its own.
type gpuPool struct {
	mu   sync.Mutex
	free []bool
}

func newGPUPool(n int64) *gpuPool {
	free := make([]bool, n)
	for i := range free {
		free[i] = true
	}
	return &gpuPool{free: free}
}

// allocate returns n device indices as NVIDIA_VISIBLE_DEVICES lists them ("0,1").
func (p *gpuPool) allocate(n int64) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var picked []string
	for i := range p.free {
		if int64(len(picked)) == n {
			break
		}
		if p.free[i] {
			picked = append(picked, strconv.Itoa(i))
		}
	}
	if int64(len(picked)) < n {
		return "", fmt.Errorf("nvidia.com/gpu: %d requested, %d free", n, len(picked))
	}
	for _, s := range picked {
		i, _ := strconv.Atoi(s)
		p.free[i] = false
	}
	return strings.Join(picked, ","), nil
}

func (p *gpuPool) release(devices string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range strings.Split(devices, ",") {
		if i, err := strconv.Atoi(s); err == nil && i < len(p.free) {
			p.free[i] = true
		}
	}
}
