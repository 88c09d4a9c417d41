/* W2 diagnostic (BENCHMARKS.md, "Issue 20, 2026-12-07, afternoon"): a ping-pong of 64-byte
 * messages with their 4-byte header between two processes, the header and body copied into one
 * buffer and sent with send(2), against two iovecs sent with sendmsg(2) (as mpconn wrote before
 * `transport::send_slices`). The two ways alternate in blocks of 500 round trips on one
 * connection (the echo side follows the block's way), so a noisy host's drift hits both alike;
 * separate runs a second apart did not show the difference (the first version of this file).
 *   gcc -O2 benches/send_iovecs.c -o /tmp/send_iovecs && for i in 1 2 3 4 5; do taskset -c 0 /tmp/send_iovecs 1; taskset -c 0 /tmp/send_iovecs 0; done
 * (argument: 1 TCP on 127.0.0.1, 0 a Unix socketpair). */
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
static void sendit(int mode,int fd,char*h,char*b){ if(mode==0){char buf[68];memcpy(buf,h,4);memcpy(buf+4,b,64);send(fd,buf,68,MSG_NOSIGNAL);} else {struct iovec iov[2]={{h,4},{b,64}}; struct msghdr m={0}; m.msg_iov=iov;m.msg_iovlen=2; sendmsg(fd,&m,MSG_NOSIGNAL);}}
int main(int argc,char**argv){int sv[2]; int tcp=atoi(argv[1]); int B=500, K=400;
 if(!tcp) socketpair(AF_UNIX,SOCK_STREAM,0,sv); else {
  int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(0x7f000001);
  bind(l,(void*)&a,sizeof a);listen(l,1);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);
  sv[0]=socket(AF_INET,SOCK_STREAM,0);connect(sv[0],(void*)&a,sizeof a);sv[1]=accept(l,0,0);int one=1;setsockopt(sv[0],IPPROTO_TCP,TCP_NODELAY,&one,4);setsockopt(sv[1],IPPROTO_TCP,TCP_NODELAY,&one,4);}
 char h[4]={0,0,0,64}, b[64], r[65536]; memset(b,'x',64);
 /* the echo side uses the same mode as the block: the mode travels in byte 4 */
 if(fork()==0){ for(int i=0;i<B*K;i++){ recv(sv[1],r,65536,0); sendit(r[4]=='s',sv[1],h,b);} exit(0);}
 double tot[2]={0,0};
 for(int k=0;k<K;k++){ int mode=k&1; b[0]= mode?'s':'x'; double t=now();
   for(int i=0;i<B;i++){ sendit(mode,sv[0],h,b); recv(sv[0],r,65536,0);} double d=now()-t; tot[mode]+=d;
   }
 wait(0);
 printf("%s send %.0f ns/rtt, sendmsg %.0f ns/rtt, ratio %.3f\n", tcp?"tcp":"unix", tot[0]/(B*K/2)*1e9, tot[1]/(B*K/2)*1e9, tot[1]/tot[0]);
}
