/* W2 diagnostic (BENCHMARKS.md, "Issue 20, 2026-12-07"): a ping-pong of 64-byte messages with their
 * 4-byte header between two processes, mode 0 one buffer with send(2), 1 two iovecs with sendmsg(2),
 * 2 the same with MSG_DONTWAIT (as mpconn writes). Usage:
 *   gcc -O2 benches/send_iovecs.c -o /tmp/send_iovecs && for m in 0 1 2; do taskset -c 0 /tmp/send_iovecs 1 $m; done
 * (first argument: 1 TCP on 127.0.0.1, 0 a Unix socketpair). */
#include <sys/socket.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <sys/wait.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int mode;
static void sendit(int fd,char*h,char*b){ if(mode==0){char buf[68];memcpy(buf,h,4);memcpy(buf+4,b,64);send(fd,buf,68,MSG_NOSIGNAL);} else {struct iovec iov[2]={{h,4},{b,64}}; struct msghdr m={0}; m.msg_iov=iov;m.msg_iovlen=2; sendmsg(fd,&m,MSG_NOSIGNAL|(mode==2?MSG_DONTWAIT:0));}}
int main(int argc,char**argv){int sv[2]; int tcp=atoi(argv[1]); mode=atoi(argv[2]); int N=100000;
 if(!tcp) socketpair(AF_UNIX,SOCK_STREAM,0,sv); else {
  int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(0x7f000001);
  bind(l,(void*)&a,sizeof a);listen(l,1);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);
  sv[0]=socket(AF_INET,SOCK_STREAM,0);connect(sv[0],(void*)&a,sizeof a);sv[1]=accept(l,0,0);int one=1;setsockopt(sv[0],IPPROTO_TCP,TCP_NODELAY,&one,4);setsockopt(sv[1],IPPROTO_TCP,TCP_NODELAY,&one,4);}
 char h[4]={0,0,0,64}, b[64], r[65536]; memset(b,'x',64);
 if(fork()==0){ for(int i=0;i<N;i++){ recv(sv[1],r,65536,0); sendit(sv[1],h,b);} exit(0);}
 double t=now();
 for(int i=0;i<N;i++){ sendit(sv[0],h,b); recv(sv[0],r,65536,0);} double a=now()-t; wait(0);
 printf("%s mode %d %.0f ns/rtt\n", tcp?"tcp":"unix", mode, a/N*1e9);
}
